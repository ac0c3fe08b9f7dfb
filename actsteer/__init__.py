"""actsteer: activation steering on TransformerLens.

Load a model, extract steering vectors, build a plan (single, combined or simultaneous)
and apply it inside a ``with`` block::

    import actsteer
    model = actsteer.load_model()                      # SmolLM2-135M, offline
    pairs = [actsteer.ContrastivePair(prompt, "A", "B") for prompt in prompts]
    vector = actsteer.caa_vector(model, pairs)         # every layer at once
    with actsteer.steer(model, actsteer.single(vector, layer=12, coefficient=4.0)):
        logits = model(tokens)
"""

from actsteer._version import __version__
from actsteer.batching import Batch, encode, encode_many, pad
from actsteer.extraction import (
    ContrastivePair,
    caa_vector,
    contrastive_activations,
    corpus_mean,
    read_activations,
)
from actsteer.generation import generate
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
from actsteer.steering import run, steer
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
    "Batch",
    "ContrastivePair",
    "HookSiteError",
    "Injection",
    "ModelUnavailableError",
    "Positions",
    "SteeringPlan",
    "SteeringVector",
    "VectorFileError",
    "VectorMeta",
    "VectorMismatchError",
    "__version__",
    "caa_vector",
    "chat_prompt",
    "combined",
    "contrastive_activations",
    "corpus_mean",
    "empty_plan",
    "encode",
    "encode_many",
    "format_item",
    "generate",
    "hook_name",
    "llama2_chat",
    "load_model",
    "match_norms",
    "mean_difference_vector",
    "model_info",
    "pad",
    "paper_prompt",
    "read_activations",
    "run",
    "simultaneous",
    "single",
    "steer",
    "tiny_model_folder",
]
