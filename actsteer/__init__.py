"""actsteer: activation steering on TransformerLens.

Load a model, turn a behaviour dataset into a steering vector, build a plan (single,
combined or simultaneous) and apply it, then measure what it did::

    import actsteer
    model = actsteer.load_model()                                   # SmolLM2-135M, offline
    data = actsteer.load_behaviour("builtin:myopia")                # built-in items
    vector = actsteer.caa_vector(model, data.pairs(), dataset="myopia")
    plan = actsteer.single(vector, layer=14, coefficient=8.0)
    text = actsteer.generate(model, "Would you rather ...", plan)   # batched, KV-cached
    with actsteer.steer(model, plan):                               # or any forward pass
        logits = model(tokens)

The names here are what a notebook needs; the submodules hold the rest
(``actsteer.sites``, ``actsteer.batching``, ``actsteer.data.corpora``, ``actsteer.paper``).
"""

from actsteer._version import __version__
from actsteer.accuracy import Documents, accuracy_sweep, next_token_accuracy
from actsteer.aggregators import Aggregator
from actsteer.baking import BakeError, bake, save_baked_hf
from actsteer.controlvector import ControlVectorError, export_control_vector, import_control_vector
from actsteer.data.behaviours import BehaviourDataset, BehaviourItem, load_behaviour
from actsteer.diagnostics import LayerDiagnostics, vector_diagnostics
from actsteer.effects import Effect, ab_effect, ab_effects, minimum_detectable_effect, paired_effect
from actsteer.evaluation import ABScores, prepare_items, score_items
from actsteer.extraction import (
    ContrastivePair,
    caa_vector,
    contrastive_activations,
    corpus_mean,
    read_activations,
)
from actsteer.generation import generate
from actsteer.hub import HubUnavailableError
from actsteer.models import (
    EMBEDDED_MODEL,
    LLAMA2_MODELS,
    ModelUnavailableError,
    load_model,
    model_info,
    tiny_model_folder,
)
from actsteer.plan import (
    Injection,
    Positions,
    SteeringPlan,
    combined,
    empty_plan,
    simultaneous,
    single,
)
from actsteer.prompts import chat_prompt, format_item, llama2_chat, paper_prompt
from actsteer.sites import SITES, HookSiteError, hook_name
from actsteer.stats import Estimate, bootstrap, paired_bootstrap
from actsteer.steerability import LayerProfile, SteerabilitySummary, layer_profile
from actsteer.steering import run, steer
from actsteer.sweep import PrefixCache, sweep_logits
from actsteer.vector import (
    SteeringVector,
    VectorFileError,
    VectorMeta,
    VectorMismatchError,
    match_norms,
)

__all__ = [
    "EMBEDDED_MODEL",
    "LLAMA2_MODELS",
    "SITES",
    "ABScores",
    "Aggregator",
    "BakeError",
    "BehaviourDataset",
    "BehaviourItem",
    "ContrastivePair",
    "ControlVectorError",
    "Documents",
    "Effect",
    "Estimate",
    "HookSiteError",
    "HubUnavailableError",
    "Injection",
    "LayerDiagnostics",
    "LayerProfile",
    "ModelUnavailableError",
    "Positions",
    "PrefixCache",
    "SteerabilitySummary",
    "SteeringPlan",
    "SteeringVector",
    "VectorFileError",
    "VectorMeta",
    "VectorMismatchError",
    "__version__",
    "ab_effect",
    "ab_effects",
    "accuracy_sweep",
    "bake",
    "bootstrap",
    "caa_vector",
    "chat_prompt",
    "combined",
    "contrastive_activations",
    "corpus_mean",
    "empty_plan",
    "export_control_vector",
    "format_item",
    "generate",
    "hook_name",
    "import_control_vector",
    "layer_profile",
    "llama2_chat",
    "load_behaviour",
    "load_model",
    "match_norms",
    "minimum_detectable_effect",
    "model_info",
    "next_token_accuracy",
    "paired_bootstrap",
    "paired_effect",
    "paper_prompt",
    "prepare_items",
    "read_activations",
    "run",
    "save_baked_hf",
    "score_items",
    "simultaneous",
    "single",
    "steer",
    "sweep_logits",
    "tiny_model_folder",
    "vector_diagnostics",
]
