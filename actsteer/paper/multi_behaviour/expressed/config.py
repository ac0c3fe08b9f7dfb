"""Configuration of the paper's comparison on behaviours the model expresses in its text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from actsteer.data.expressed import load_expressed, neutral_prompts
from actsteer.paper.common import ConfigMixin, ModelConfig, invalid

TEXT_CORPORA: tuple[str, ...] = ("builtin", "wikitext")
"""Named texts for the norms and the perplexity cost (``tax_corpus``); a path also works."""

KIND = "expressed"
"""The ``kind`` recorded in results made by this config."""

COMBINED_RECIPES: tuple[str, ...] = ("sum", "mean", "weighted_mean")
"""How the combined vector mixes the behaviours at one layer:

* ``sum`` — each behaviour's vector at its own strength (``fraction`` of the norm), added:
  the simultaneous plan moved to one layer, so it differs from simultaneous by the layer only;
* ``mean`` — the paper's unweighted recipe: the raw vectors averaged, one shared coefficient;
* ``weighted_mean`` — the paper's weighted recipe: each raw vector weighted by the coefficient
  its behaviour gets alone, averaged, one shared coefficient.

``mean`` and ``weighted_mean`` are scaled so the merged vector has the norm of the ``sum``
vector (matched total strength): they differ from ``sum`` by the coefficients only.
"""


def _default_model() -> ModelConfig:
    return ModelConfig(device="cpu")


@dataclass(frozen=True)
class ExpressedConfig(ConfigMixin):
    """Individual, combined and simultaneous steering of behaviours the model expresses,
    measured by word-set likelihoods after neutral prompts (JSON round-trippable)."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir", "batch_size")

    model: ModelConfig = field(default_factory=_default_model)
    """The model and where it runs."""
    behaviours: tuple[str, ...] = ("sentiment", "myopia", "wealth_seeking")
    """Built-in expressed behaviours (:data:`actsteer.data.expressed.EXPRESSED_BEHAVIOURS`)
    or behaviour files (``.json``, ``docs/behaviours.md``), mixed as you like."""
    candidate_layers: tuple[int, ...] | None = None
    """Layers searched for each behaviour's own layer and the combined vector's layer on
    the grid prompts (None: :func:`default_candidate_layers`)."""
    fraction: float = 0.15
    """Strength of each behaviour's vector, as a fraction of the median residual norm at
    the layer where it is added."""
    steerability_fractions: tuple[float, ...] | None = None
    """Fractions of the per-item steerability slopes at each behaviour's own layer (None:
    ``-fraction, 0, +fraction``, which reuses the individual plans at no extra cost)."""
    combined_layer: int | None = None
    """Layer of the combined vector (None: chosen on the grid prompts by the own layers'
    rule; the paper's 15 of 32, scaled to the model, is reported beside it)."""
    combined_recipes: tuple[str, ...] = COMBINED_RECIPES
    """Combined vectors to compare (see :data:`COMBINED_RECIPES`)."""
    n_grid: int = 24
    """Neutral prompts used to choose each behaviour's own layer."""
    n_test: int = 48
    """Neutral prompts every reported effect is measured on."""
    tax_corpus: str = "builtin"
    """Text for the residual norms (the unit of every strength) and the perplexity cost:
    ``"builtin"`` (the English documents shipped with actsteer, the same on every machine),
    ``"wikitext"`` (WikiText-2 from the reference data, required) or a path."""
    tax_documents: int = 8
    """Documents of the perplexity text."""
    tax_max_tokens: int = 128
    """Tokens per perplexity document (truncated)."""
    generate_prompts: int = 8
    """Test prompts continued by greedy generation and scored by VADER (0: skip)."""
    generate_tokens: int = 16
    """New tokens per generated continuation."""
    batch_size: int = 24
    """Prompts per forward pass."""
    seed: int = 0
    """Shuffle seed of the grid/test split of the neutral prompts."""
    n_resamples: int = 1000
    """Bootstrap resamples for intervals."""
    out_dir: str = "results/multi_behaviour_quick"
    """Folder for the results file, vectors and figures."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        for name in ("behaviours", "combined_recipes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise invalid(name, value, "give a list, not one value")
            object.__setattr__(self, name, tuple(value))
        if self.steerability_fractions is not None:
            object.__setattr__(self, "steerability_fractions",
                               tuple(float(f) for f in self.steerability_fractions))
        if self.candidate_layers is not None:
            if isinstance(self.candidate_layers, int) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0
                    for x in self.candidate_layers):
                raise invalid("candidate_layers", self.candidate_layers,
                              "give a list of layer indices >= 0, e.g. [6, 10, 14]")
            object.__setattr__(self, "candidate_layers", tuple(self.candidate_layers))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise invalid("model", self.model, "give a ModelConfig or a dict of its fields")
        if not self.behaviours:
            raise invalid("behaviours", self.behaviours, "name at least one behaviour")
        names = [load_expressed(b).name for b in self.behaviours]  # a bad file says why
        if len(set(names)) != len(names):
            raise invalid("behaviours", self.behaviours, f"their names {names} repeat; name "
                                                         "each behaviour once")
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise invalid("fraction", self.fraction, "use a fraction of the norm in (0, 1]")
        fractions = self.ladder()
        if (len(fractions) < 3 or 0.0 not in fractions or len(set(fractions)) != len(fractions)
                or not all(math.isfinite(f) for f in fractions)):
            raise invalid("steerability_fractions", fractions,
                          "use at least three distinct finite fractions including 0")
        if self.combined_layer is not None and (not isinstance(self.combined_layer, int)
                                                or self.combined_layer < 0):
            raise invalid("combined_layer", self.combined_layer, "use a layer >= 0 or None")
        bad = [r for r in self.combined_recipes if r not in COMBINED_RECIPES]
        if bad or not self.combined_recipes:
            raise invalid("combined_recipes", self.combined_recipes,
                          f"choose from {', '.join(COMBINED_RECIPES)}")
        available = len(neutral_prompts())
        for name in ("n_grid", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise invalid(name, value, "use at least 2 prompts")
        if self.n_grid + self.n_test > available:
            raise invalid("n_test", self.n_test, f"n_grid + n_test must be at most the "
                                                 f"{available} built-in neutral prompts")
        if self.tax_corpus not in TEXT_CORPORA and not Path(self.tax_corpus).exists():
            raise invalid("tax_corpus", self.tax_corpus, f"use {' or '.join(TEXT_CORPORA)}, or "
                                                         "an existing .txt file or folder")
        for name, low in (("tax_documents", 1), ("tax_max_tokens", 2), ("generate_prompts", 0),
                          ("generate_tokens", 1), ("batch_size", 1), ("n_resamples", 10)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise invalid(name, value, f"use a whole number >= {low}")
        if self.generate_prompts > self.n_test:
            raise invalid("generate_prompts", self.generate_prompts,
                          f"use at most n_test={self.n_test} prompts")

    def ladder(self) -> tuple[float, ...]:
        """The steerability fractions in use, sorted."""
        found = self.steerability_fractions or (-self.fraction, 0.0, self.fraction)
        return tuple(sorted(float(f) for f in found))

    def results_config(self) -> dict[str, Any]:
        return {"kind": KIND, **super().results_config()}


CANDIDATE_DEPTHS: tuple[float, ...] = (1 / 5, 1 / 3, 1 / 2, 3 / 5, 2 / 3, 3 / 4)
"""Relative depths of the default candidate layers: up to three quarters of the model, past
the layer where the built-in behaviours steer most among the first four (3/5)."""


def default_candidate_layers(n_layers: int) -> tuple[int, ...]:
    """:data:`CANDIDATE_DEPTHS` of the depth (6, 10, 15, 18, 20, 22 of 30), distinct and in
    range."""
    picks = [round(n_layers * share) for share in CANDIDATE_DEPTHS]
    return tuple(sorted({min(n_layers - 1, max(0, x)) for x in picks}))
