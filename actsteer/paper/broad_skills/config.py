"""Configuration of the broad-skills reproduction, and its named profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actsteer.paper.broad_skills.curves import STOP_BELOW, check_schedule, paper_coefficients
from actsteer.paper.common import ConfigError, ConfigMixin, ModelConfig, invalid, scale_layer

PAPER_LAYERS: tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30)
PAPER_LAYER = 15
BASE_VECTORS: tuple[str, ...] = ("general", "python")
CONTROLS: tuple[str, ...] = ("permuted", "random")
VECTOR_NAMES: tuple[str, ...] = BASE_VECTORS + tuple(
    f"{base}_{control}" for base in BASE_VECTORS for control in CONTROLS)
EVAL_SETS: tuple[str, ...] = ("text", "code", "python")
"""Evaluation sets: text, non-Python general code, Python."""
SOURCES = ("offline", "hub")
QUICK_COEFFICIENTS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Coarse schedule of the quick profile: on SmolLM2-135M the general and Python vectors at
layer 14 halve their skill between 1 and 2 (measured), so this brackets the headline."""


@dataclass(frozen=True)
class BroadSkillsConfig(ConfigMixin):
    """Everything that determines the results of :func:`run` (JSON round-trippable)."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir", "prefix_cache_mb", "batch_size")
    """Fields that never change results (output folder and speed knobs)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model and where it runs."""
    source: str = "offline"
    """``"offline"`` (files on this machine) or ``"hub"`` (the paper's Hub datasets)."""
    n_train: int = 5000
    """Training documents per corpus (the vectors' means)."""
    n_valid: int = 200
    """Validation documents per evaluation set."""
    max_tokens: int = 512
    """Tokens per document (BOS included), truncated; for means and for evaluation."""
    layers: tuple[int, ...] | None = None
    """Injection layers (None: the paper's layer 15 scaled to the model's depth)."""
    coefficients: tuple[float, ...] = paper_coefficients()
    """Coefficient schedule; starts at 0 and strictly increases."""
    stop_below: float = STOP_BELOW
    """A sweep stops after the first coefficient whose relative skill top-1 is below this."""
    vectors: tuple[str, ...] = ("general", "python", "general_permuted", "python_permuted")
    """Vectors to sweep: general, python and controls ``<base>_permuted``/``<base>_random``."""
    control_layers: tuple[int, ...] | None = None
    """Layers at which control vectors (``*_permuted``, ``*_random``) are swept (None: all
    of ``layers``; others are skipped for controls)."""
    text_path: str | None = None
    """Text corpus: a file or folder of ``.txt`` (None: shared WikiText-2, else built-in)."""
    code_roots: tuple[str, ...] | None = None
    """Folders/files of the offline general-code corpus (None: this machine's defaults)."""
    code_globs: tuple[str, ...] | None = None
    """Glob patterns under ``code_roots`` (None: the corpora module's defaults)."""
    max_per_language: int | None = 60
    """Offline general code: at most this many documents per language."""
    k: int = 10
    """The k of top-k accuracy."""
    batch_size: int = 8
    """Documents per forward pass."""
    prefix_cache_mb: int = 1024
    """Keep the unsteered residual stream entering the steered block when the evaluation
    sets need at most this many MB (then each coefficient runs only the blocks from the
    steered layer on; 0 disables)."""
    seed: int = 0
    """Seed of the train/validation splits, the controls and the bootstrap."""
    n_resamples: int = 1000
    """Bootstrap resamples for intervals."""
    out_dir: str = "results/broad_skills"
    """Folder for the results file, vectors and figures."""

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        object.__setattr__(self, "vectors", tuple(self.vectors))
        for name in ("layers", "control_layers", "code_roots", "code_globs"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (str, int)):
                    raise ConfigError(f"{name}={value!r} is invalid: give a list, not one value")
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        bad = invalid
        if not isinstance(self.model, ModelConfig):
            raise bad("model", self.model, "give a ModelConfig or a dict of its fields")
        if self.source not in SOURCES:
            raise bad("source", self.source, "use 'offline' or 'hub'")
        for name in ("n_train", "n_valid", "batch_size", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, value, "use a positive integer")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 2:
            raise bad("max_tokens", self.max_tokens, "use at least 2 tokens per document")
        if self.layers is not None and (not self.layers or any(
                not isinstance(x, int) or x < 0 for x in self.layers)):
            raise bad("layers", self.layers, "use non-negative layer indices or None")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise bad("layers", self.layers, "each layer may appear once")
        if self.control_layers is not None and any(
                not isinstance(x, int) or x < 0 for x in self.control_layers):
            raise bad("control_layers", self.control_layers,
                      "use non-negative layer indices or None")
        if (self.layers is not None and self.control_layers is not None
                and not set(self.control_layers) <= set(self.layers)):
            raise bad("control_layers", self.control_layers,
                      f"controls run only at swept layers; with layers={self.layers} use a "
                      "subset of them, or control_layers=None for every layer")
        if any(not math.isfinite(c) for c in self.coefficients):
            raise bad("coefficients", self.coefficients, "use finite coefficients")
        try:
            check_schedule(self.coefficients)
        except ValueError as error:
            raise bad("coefficients", self.coefficients, str(error)) from None
        if len(self.coefficients) < 2:
            raise bad("coefficients", self.coefficients, "give 0 and at least one more")
        if not 0 <= self.stop_below < 1:
            raise bad("stop_below", self.stop_below, "use a share in [0, 1)")
        unknown = [v for v in self.vectors if v not in VECTOR_NAMES]
        if not self.vectors or unknown:
            raise bad("vectors", self.vectors, f"use some of {', '.join(VECTOR_NAMES)}")
        if len(set(self.vectors)) != len(self.vectors):
            raise bad("vectors", self.vectors, "each vector may appear once")
        if self.max_per_language is not None and self.max_per_language < 1:
            raise bad("max_per_language", self.max_per_language, "use >= 1 or None")
        if self.prefix_cache_mb < 0:
            raise bad("prefix_cache_mb", self.prefix_cache_mb, "use >= 0 (0 disables)")
        if self.n_resamples < 10:
            raise bad("n_resamples", self.n_resamples, "use at least 10 resamples")


def profile(name: str, **overrides: Any) -> BroadSkillsConfig:
    """A named configuration, with fields replaced by ``overrides``.

    * ``"quick"`` — the embedded SmolLM2-135M (30 layers) on the CPU, offline corpora,
      48 training and 24 validation documents per corpus of at most 128 tokens, the
      paper's headline layer 15 scaled to 14 (add the paper's layer 10 as 9 with
      ``layers=(9, 14)``: two more sweeps), the coarse :data:`QUICK_COEFFICIENTS`
      stopped once the skill falls below 50% (not the paper's 5%, to save time: the
      headline needs only the 50% crossing), the general and Python vectors and the
      permuted general control; about five minutes on two idle cores.
    * ``"paper"`` — Llama-2-7b base on a GPU, the Hub corpora, 5,000 training documents,
      the paper's layers and full schedule, all controls.
    """
    if name == "quick":
        n_layers = 30
        base = BroadSkillsConfig(
            model=ModelConfig(device="cpu"), source="offline",
            n_train=48, n_valid=24, max_tokens=128,
            layers=(scale_layer(PAPER_LAYER, n_layers),),
            control_layers=(scale_layer(PAPER_LAYER, n_layers),),
            coefficients=QUICK_COEFFICIENTS, stop_below=0.5,
            vectors=("general", "python", "general_permuted"),
            max_per_language=40, batch_size=16, n_resamples=500,
            out_dir="results/broad_skills_quick",
        )
    elif name == "paper":
        base = BroadSkillsConfig(
            model=ModelConfig(name="meta-llama/Llama-2-7b-hf", device="cuda"), source="hub",
            n_train=5000, n_valid=500, max_tokens=1024, layers=PAPER_LAYERS,
            coefficients=paper_coefficients(), vectors=VECTOR_NAMES,
            batch_size=8, prefix_cache_mb=0, out_dir="results/broad_skills_paper",
        )
    else:
        raise ConfigError(f"unknown profile {name!r}; use 'quick' or 'paper'")
    if (isinstance(overrides.get("layers"), (list, tuple)) and overrides["layers"]
            and "control_layers" not in overrides and base.control_layers is not None):
        # Controls follow a layer override: the kept ones, else the deepest layer.
        layers = tuple(overrides["layers"])
        kept = tuple(x for x in base.control_layers if x in layers)
        overrides = {**overrides, "control_layers": kept or (max(layers),)}
    return base.with_overrides(overrides)
