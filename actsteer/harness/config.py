"""Configuration of the harness in the AxBench protocol, and its profiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, load_expressed
from actsteer.harness.instructions import instructions
from actsteer.harness.methods import METHODS
from actsteer.paper.common import ConfigMixin, ModelConfig, invalid

__all__ = ["KIND", "PROFILES", "HarnessConfig", "default_layer", "profile"]

KIND = "harness"
"""The ``kind`` recorded in results made by this config."""

LAYER_DEPTH = 2 / 3
"""Default depth of the steered layer: 20 of 30 on the embedded model, where the expressed
comparison chose sentiment's and myopia's own layers (``docs/results.md``)."""


def default_layer(n_layers: int) -> int:
    """:data:`LAYER_DEPTH` of the depth, in range."""
    return min(n_layers - 1, max(0, round(n_layers * LAYER_DEPTH)))


def _default_model() -> ModelConfig:
    # The bridge decodes on a plain Hugging Face view of its weights, about 4x the tokens per
    # second of HookedTransformer's KV cache (docs/steering.md): generation is the slow step.
    return ModelConfig(device="cpu", backend="bridge")


@dataclass(frozen=True)
class HarnessConfig(ConfigMixin):
    """AxBench's protocol with local scorers (``docs/harness.md``; JSON round-trippable)."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir", "batch_size")

    model: ModelConfig = field(default_factory=_default_model)
    """The model and where it runs (default the bridge: the faster generator)."""
    behaviours: tuple[str, ...] = EXPRESSED_BEHAVIOURS
    """Built-in expressed behaviours or behaviour files (``docs/behaviours.md``)."""
    methods: tuple[str, ...] = ("steering", "prompting", "prompting+steering")
    """Rows of the report (:data:`actsteer.harness.methods.METHODS`)."""
    strengths: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
    """The ladder of a laddered method: fractions of the median residual norm at the layer,
    0 included (the unsteered reference)."""
    layer: int | None = None
    """Where each vector is added and projected (None: :func:`default_layer`)."""
    n_instructions: int = 40
    """Everyday instructions used (the first ``n`` of 40), split into two halves."""
    max_new_tokens: int = 24
    """Tokens generated per instruction (greedy)."""
    detection_folds: int = 4
    """Folds of the detection axis (vectors built on the other folds)."""
    seed: int = 0
    """Seed of the split of the instructions into halves."""
    n_resamples: int = 1000
    """Bootstrap resamples for intervals."""
    batch_size: int = 20
    """Instructions per forward pass."""
    out_dir: str = "results/harness"
    """Folder for the results log and figures."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        for name in ("behaviours", "methods", "strengths"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                raise invalid(name, value, "give a list, not one value")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise invalid("model", self.model, "give a ModelConfig or a dict of its fields")
        if not self.behaviours:
            raise invalid("behaviours", self.behaviours, "name at least one behaviour")
        names = [load_expressed(b).name for b in self.behaviours]  # a bad file says why
        if len(set(names)) != len(names):
            raise invalid("behaviours", self.behaviours, f"their names {names} repeat")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise invalid("methods", self.methods, f"choose distinct names from "
                                                   f"{', '.join(METHODS)}")
        lowering = [m for m in self.methods if METHODS[m].goal == "lower"]
        if lowering and "prompting" not in self.methods:
            raise invalid("methods", self.methods, f"{', '.join(lowering)} lower the behaviour "
                                                   "once its instruction elicits it, against "
                                                   "prompting alone: add 'prompting'")
        ladder = self.strengths
        if (0.0 not in ladder or len(ladder) < 2 or len(set(ladder)) != len(ladder)
                or not all(math.isfinite(s) and 0 <= s <= 2 for s in ladder)):
            raise invalid("strengths", ladder, "use at least two distinct fractions in [0, 2], "
                                               "0 included (the unsteered reference)")
        if self.layer is not None and (isinstance(self.layer, bool)
                                       or not isinstance(self.layer, int) or self.layer < 0):
            raise invalid("layer", self.layer, "use a layer index >= 0, or null for 2/3 depth")
        available = len(instructions())
        if (isinstance(self.n_instructions, bool) or not isinstance(self.n_instructions, int)
                or not 4 <= self.n_instructions <= available):
            raise invalid("n_instructions", self.n_instructions, f"use 4..{available}")
        for name, low in (("max_new_tokens", 1), ("detection_folds", 2), ("n_resamples", 10),
                          ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise invalid(name, value, f"use a whole number >= {low}")

    def results_config(self) -> dict[str, Any]:
        return {"kind": KIND, **super().results_config()}


PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"behaviours": ("sentiment",), "n_instructions": 8,
              "strengths": (0.0, 0.1, 0.2), "out_dir": "results/harness_quick"},
    "standard": {},
    "judged": {"behaviours": ("sentiment", "wealth_seeking"),
               "methods": ("steering", "pca", "probe", "learned", "surgery", "prompting",
                           "subtract", "ablation", "clamp", "orthogonalised", "surgery:lower"),
               "strengths": (0.0, 0.1, 0.2, 0.3), "out_dir": "results/harness_judged"},
}
"""``quick``: sentiment, 8 instructions, 3 strengths (13 units; sized for ``actsteer demo``,
its measured time is in ``docs/harness.md``); ``standard``: every built-in behaviour, 40
instructions, the full ladder; ``judged``: the judged table's rows
(:data:`actsteer.harness.methods.JUDGED_METHODS`, with CAA steering and prompting) on
sentiment and wealth-seeking, 40 instructions, strengths 0-0.3 (add a behaviour file with
``behaviours``)."""


def profile(name: str = "quick", **overrides: Any) -> HarnessConfig:
    """The named profile's config with ``overrides`` (``"model.dtype"`` keys reach the
    model)."""
    if name not in PROFILES:
        raise invalid("profile", name, f"use one of {', '.join(PROFILES)}")
    return HarnessConfig().with_overrides({**PROFILES[name], **overrides})
