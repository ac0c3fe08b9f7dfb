"""actsteer: activation steering on TransformerLens, with the measurements that say whether
it worked.

Load a model, turn contrasting examples into a steering vector, build a plan (single,
combined or simultaneous) and apply it, then measure what it did::

    import actsteer
    model = actsteer.load_model()                                   # SmolLM2-135M, offline
    sentiment = actsteer.load_expressed("sentiment")                 # built-in contrast set
    vector = actsteer.caa_vector(model, sentiment.pairs(), read="answer_mean")
    norms = actsteer.residual_norms(model, ["Some ordinary text.", "More of it."])
    plan = actsteer.single(vector, layer=10, coefficient=0.15, norms=norms)
    text = actsteer.generate(model, "The weather this week has been", plan)
    with actsteer.steer(model, plan):                               # or any forward pass
        logits = model(tokens)

The names here are what a notebook needs (``docs/api.md`` lists each with one line); every
module keeps the rest (``actsteer.effects``, ``actsteer.sweep``, ``actsteer.surgery``, ...).
Names are imported on first use, so ``import actsteer`` (and ``actsteer --help``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actsteer._version import __version__

_EXPORTS: dict[str, str] = {
    # load a model and data
    "load_model": "actsteer.models",
    "load_behaviour": "actsteer.data.behaviours",
    "load_expressed": "actsteer.data.expressed",
    "prepare_items": "actsteer.evaluation",
    "chat_prompt": "actsteer.prompts",
    "ContrastivePair": "actsteer.contrast",
    "ContrastItem": "actsteer.contrast",
    "WordSets": "actsteer.contrast",
    # vectors and plans
    "caa_vector": "actsteer.extraction",
    "SteeringVector": "actsteer.vector",
    "SteeringPlan": "actsteer.plan",
    "Positions": "actsteer.plan",
    "single": "actsteer.plan",
    "combined": "actsteer.plan",
    "simultaneous": "actsteer.plan",
    "project": "actsteer.projection",
    "residual_norms": "actsteer.norms",
    # apply
    "steer": "actsteer.steering",
    "run": "actsteer.steering",
    "generate": "actsteer.generation",
    # measure
    "score_items": "actsteer.evaluation",
    "layer_profile": "actsteer.steerability",
    "ab_effects": "actsteer.effects",
    "paired_effect": "actsteer.effects",
    "word_propensities": "actsteer.likelihood",
    "continuation_propensities": "actsteer.likelihood",
    "next_token_accuracy": "actsteer.accuracy",
    # export
    "bake": "actsteer.baking",
    "save_baked_hf": "actsteer.baking",
    "export_control_vector": "actsteer.controlvector",
    "import_control_vector": "actsteer.controlvector",
    # errors
    "ActsteerError": "actsteer.errors",
}
"""Public name → the module that defines it."""

__all__ = [
    "ActsteerError",
    "ContrastItem",
    "ContrastivePair",
    "Positions",
    "SteeringPlan",
    "SteeringVector",
    "WordSets",
    "__version__",
    "ab_effects",
    "bake",
    "caa_vector",
    "chat_prompt",
    "combined",
    "continuation_propensities",
    "export_control_vector",
    "generate",
    "import_control_vector",
    "layer_profile",
    "load_behaviour",
    "load_expressed",
    "load_model",
    "next_token_accuracy",
    "paired_effect",
    "prepare_items",
    "project",
    "residual_norms",
    "run",
    "save_baked_hf",
    "score_items",
    "simultaneous",
    "single",
    "steer",
    "word_propensities",
]

if TYPE_CHECKING:
    from actsteer.accuracy import next_token_accuracy
    from actsteer.baking import bake, save_baked_hf
    from actsteer.contrast import ContrastItem, ContrastivePair, WordSets
    from actsteer.controlvector import export_control_vector, import_control_vector
    from actsteer.data.behaviours import load_behaviour
    from actsteer.data.expressed import load_expressed
    from actsteer.effects import ab_effects, paired_effect
    from actsteer.errors import ActsteerError
    from actsteer.evaluation import prepare_items, score_items
    from actsteer.extraction import caa_vector
    from actsteer.generation import generate
    from actsteer.likelihood import continuation_propensities, word_propensities
    from actsteer.models import load_model
    from actsteer.norms import residual_norms
    from actsteer.plan import Positions, SteeringPlan, combined, simultaneous, single
    from actsteer.projection import project
    from actsteer.prompts import chat_prompt
    from actsteer.steerability import layer_profile
    from actsteer.steering import run, steer
    from actsteer.vector import SteeringVector


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, e.g. ``actsteer.effects``) on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'actsteer' has no attribute {name!r}; the public names are "
                         "in actsteer.__all__ (docs/api.md), the rest in their modules")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
