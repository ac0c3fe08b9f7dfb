"""Configuration of the multi-behaviour reproduction, and its named profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from actsteer.data.behaviours import PAPER_BEHAVIOURS, PAPER_FILES, PAPER_SEED, canonical_name
from actsteer.data.behaviours.sources import BUILTIN_PREFIX
from actsteer.paper.common import ConfigError, ConfigMixin, ModelConfig, invalid

PAPER_LAYER = 15
"""The paper's layer for individual and combined steering (of Llama 2's 32)."""
PAPER_SIMULTANEOUS_LAYERS: dict[str, int] = {
    "myopia": 11, "wealth_seeking": 12, "sycophancy": 13, "agreeableness": 14,
    "anti_immigration": 15,
}
"""Layer of each behaviour in the paper's simultaneous steering (Llama 2, 32 layers)."""
COMBINED_VARIANTS: tuple[str, ...] = ("sum", "mean", "weighted_sum", "weighted_mean")
PROMPT_FORMATS = ("paper", "chat")
READ_POSITIONS = ("last", "answer", "answer_mean", "mean")
VECTOR_SOURCES = ("letters", "texts")
TAX_CORPORA = ("wikitext", "builtin", "none")
CHOOSE_METRICS = ("p_matching", "matching_rate", "logit_diff")


def behaviour_key(spec: str) -> str:
    """Short name of a behaviour spec: a paper name (aliases such as ``"myopic"`` or
    ``"Wealth Seeking"`` resolved), a built-in's name (``"builtin:myopia"`` → ``"myopia"``),
    or a file's stem."""
    if spec.startswith(BUILTIN_PREFIX):
        return canonical_name(spec[len(BUILTIN_PREFIX):])
    if spec.endswith((".json", ".jsonl")) or "/" in spec:
        stem = Path(spec).stem
        for name, filename in PAPER_FILES.items():
            if Path(filename).stem == stem:
                return name
        return stem
    return canonical_name(spec)


@dataclass(frozen=True)
class MultiBehaviourConfig(ConfigMixin):
    """Everything that determines the results of the experiment (JSON round-trippable)."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir", "batch_size")
    """Fields that never change results (output folder, speed knobs)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model and where it runs."""
    behaviours: tuple[str, ...] = ("myopia", "wealth_seeking")
    """Paper behaviour names (:data:`actsteer.data.behaviours.PAPER_BEHAVIOURS`, read from
    ``data_dir``), built-in sets (``"builtin:myopia"``, ``"builtin:wealth_seeking"``) or
    paths of .json/.jsonl files."""
    data_dir: str | None = None
    """Folder with the paper's behaviour files; None: the shared data folder when found."""
    prompt_format: str = "paper"
    """``"paper"`` (raw Human/AI prompt) or ``"chat"`` (model chat template + answer stem)."""
    read_position: str = "last"
    """Where extraction reads the pair activations: ``last`` token (the paper),
    ``answer`` token, ``answer_mean`` or ``mean`` over all tokens."""
    vector_source: str = "letters"
    """``"letters"``: contrastive pairs ending at the answer letters (the paper);
    ``"texts"``: the two answer texts as continuations of the question without letters
    (:mod:`actsteer.data.behaviours.texts`), read over their tokens (``answer_mean``)."""
    letter_free_items: int | None = None
    """Test items also measured without letters: log P(matching answer text) − log P(the
    other's) under the reported plans (None: every test item; 0: skip)."""
    balance_letters: bool = False
    """Extract each vector from the letter-balanced part of its vector split
    (:meth:`~actsteer.data.behaviours.BehaviourDataset.letter_balanced`), so that it does
    not also encode the matching answer's letter (the paper: False)."""
    vector_files: Mapping[str, str] | None = None
    """Behaviour → a saved vector file (``SteeringVector.save``) to use instead of
    extracting one (None: extract every vector from the vector split)."""
    n_vector: int | None = None
    """Items for the steering vectors (None: the paper's 500)."""
    n_grid: int | None = None
    """Items for the grid search (None: the paper's 200)."""
    n_test: int | None = None
    """Test items (None: all the rest)."""
    grid_layers: tuple[int, ...] | None = None
    """Layers searched (None: the paper's layer 15 scaled to the model's depth)."""
    grid_multipliers: tuple[float, ...] = (-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0)
    """Multipliers searched; each sign is swept outward from 0 (0 itself is the default)."""
    max_top_share: float = 0.95
    """A grid cell collapsed when one answer token is given for more than this share."""
    max_faulty: float = 0.2
    """A grid cell failed when more than this share of answers is faulty (and more than
    unsteered: a model that is already this faulty can still be steered)."""
    choose_metric: str = "p_matching"
    """The paired effect a grid choice rests on: ``p_matching``, ``matching_rate`` (the
    paper's) or ``logit_diff``. A setting is chosen only when its effect's interval on the
    grid split excludes 0 on the intended side."""
    combined_layer: int | None = None
    """Layer of the combined vector (None: the paper's layer 15 scaled)."""
    combined_variants: tuple[str, ...] = COMBINED_VARIANTS
    """Combined vectors to try: sum, mean, weighted_sum, weighted_mean (each added and
    subtracted). Unweighted ones use the mean chosen add multiplier as coefficient."""
    simultaneous_layers: Mapping[str, int] | None = None
    """Behaviour → layer for simultaneous steering (None: the paper's 11..15 scaled)."""
    scales: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
    """Global scales of the simultaneous plan (0, the unsteered model, is always reported);
    scored on the grid split (to choose a positive scale per behaviour) and on the test
    split (to report)."""
    steerability_layers: tuple[int, ...] | None = None
    """Layers of the per-item steerability profile (None: every ``steerability_stride``-th
    layer of the model from ``stride // 2``, and the grid layers)."""
    steerability_stride: int = 1
    """Spacing of the profiled layers when ``steerability_layers`` is None (1: all)."""
    steerability_multipliers: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
    """Symmetric multipliers (0 included) of the per-item propensity slopes."""
    steerability_items: int | None = None
    """Test items the steerability profile uses (None: the whole test split)."""
    tax_corpus: str = "wikitext"
    """Alignment-tax text: ``"wikitext"`` (shared WikiText-2), ``"builtin"`` or a path;
    ``"none"`` skips the step."""
    tax_documents: int = 20
    """Documents of the alignment-tax corpus."""
    tax_max_tokens: int = 256
    """Tokens per alignment-tax document (truncated)."""
    batch_size: int = 16
    """Prompts per forward pass."""
    seed: int = PAPER_SEED
    """Shuffle seed of the splits (the paper's 13)."""
    n_resamples: int = 1000
    """Bootstrap resamples for intervals."""
    out_dir: str = "results/multi_behaviour"
    """Folder for the results file, vectors and figures."""

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        for name in ("behaviours", "combined_variants"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise invalid(name, value, "give a list, not one value")
            object.__setattr__(self, name, tuple(value))
        if self.vector_files is not None:
            object.__setattr__(self, "vector_files", dict(self.vector_files))
        if self.steerability_layers is not None:
            object.__setattr__(self, "steerability_layers", tuple(self.steerability_layers))
        for name in ("grid_multipliers", "scales", "steerability_multipliers"):
            object.__setattr__(self, name, tuple(float(m) for m in getattr(self, name)))
        if self.grid_layers is not None:
            object.__setattr__(self, "grid_layers", tuple(self.grid_layers))
        if self.simultaneous_layers is not None:
            object.__setattr__(self, "simultaneous_layers", dict(self.simultaneous_layers))
        self._validate()

    def _validate(self) -> None:
        bad = invalid
        if not isinstance(self.model, ModelConfig):
            raise bad("model", self.model, "give a ModelConfig or a dict of its fields")
        if self.prompt_format not in PROMPT_FORMATS:
            raise bad("prompt_format", self.prompt_format, "use 'paper' or 'chat'")
        if self.read_position not in READ_POSITIONS:
            raise bad("read_position", self.read_position,
                      f"use one of {', '.join(READ_POSITIONS)}")
        if self.vector_source not in VECTOR_SOURCES:
            raise bad("vector_source", self.vector_source, "use 'letters' or 'texts'")
        if self.letter_free_items is not None and (not isinstance(self.letter_free_items, int)
                                                   or self.letter_free_items < 0):
            raise bad("letter_free_items", self.letter_free_items,
                      "use a number of items >= 0 (0: skip) or None (all test items)")
        if not self.behaviours:
            raise bad("behaviours", self.behaviours, "give at least one behaviour")
        keys = [behaviour_key(b) for b in self.behaviours]
        if len(set(keys)) != len(keys):
            raise bad("behaviours", self.behaviours,
                      f"each behaviour may appear once (they name {keys})")
        if self.tax_corpus not in TAX_CORPORA and not Path(self.tax_corpus).exists():
            raise bad("tax_corpus", self.tax_corpus,
                      f"use one of {', '.join(TAX_CORPORA)} or an existing .txt file/folder")
        for name in ("n_vector", "n_grid", "n_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, value, "use a positive number of items or None")
        if self.grid_layers is not None and (
                not self.grid_layers or any(not isinstance(x, int) or x < 0
                                            for x in self.grid_layers)):
            raise bad("grid_layers", self.grid_layers, "use non-negative layer indices or None")
        if not self.grid_multipliers or any(not math.isfinite(m) or m == 0
                                            for m in self.grid_multipliers):
            raise bad("grid_multipliers", self.grid_multipliers,
                      "use finite non-zero multipliers (the default is always scored)")
        if not any(m > 0 for m in self.grid_multipliers) or not any(
                m < 0 for m in self.grid_multipliers):
            raise bad("grid_multipliers", self.grid_multipliers,
                      "give at least one negative and one positive multiplier")
        for name in ("max_top_share", "max_faulty"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise bad(name, value, "use a share in (0, 1]")
        if self.combined_layer is not None and self.combined_layer < 0:
            raise bad("combined_layer", self.combined_layer, "use a layer index >= 0 or None")
        unknown = [v for v in self.combined_variants if v not in COMBINED_VARIANTS]
        if unknown:
            raise bad("combined_variants", self.combined_variants,
                      f"unknown {unknown}; use {', '.join(COMBINED_VARIANTS)}")
        if self.simultaneous_layers is not None:
            missing = [b for b in self.behaviours if behaviour_key(b)
                       not in self.simultaneous_layers]
            negative = {k: v for k, v in self.simultaneous_layers.items()
                        if not isinstance(v, int) or v < 0}
            if missing or negative:
                problem = (f"no layer for {missing}" if missing
                           else f"bad layer for {negative}")
                raise bad("simultaneous_layers", self.simultaneous_layers,
                          f"{problem}; give a layer index >= 0 for every behaviour")
        if any(not math.isfinite(s) for s in self.scales):
            raise bad("scales", self.scales, "use finite scales")
        if self.choose_metric not in CHOOSE_METRICS:
            raise bad("choose_metric", self.choose_metric,
                      f"use one of {', '.join(CHOOSE_METRICS)}")
        if self.vector_files is not None:
            unknown_files = sorted(set(self.vector_files) - set(keys))
            missing_files = sorted(f for f in self.vector_files.values()
                                   if not Path(f).is_file())
            if unknown_files or missing_files:
                raise bad("vector_files", self.vector_files,
                          f"behaviours {unknown_files} are not run" if unknown_files
                          else f"no such files {missing_files}")
        multipliers = self.steerability_multipliers
        if (len(multipliers) < 3 or 0.0 not in multipliers
                or sorted(multipliers) != sorted(-m for m in multipliers)
                or len(set(multipliers)) != len(multipliers)
                or not all(math.isfinite(m) for m in multipliers)):
            raise bad("steerability_multipliers", multipliers,
                      "use distinct finite multipliers symmetric around 0, 0 included, "
                      "e.g. [-8, -4, 0, 4, 8]")
        if self.steerability_layers is not None and any(
                not isinstance(x, int) or x < 0 for x in self.steerability_layers):
            raise bad("steerability_layers", self.steerability_layers,
                      "use non-negative layer indices or None (every layer)")
        if not isinstance(self.steerability_stride, int) or self.steerability_stride < 1:
            raise bad("steerability_stride", self.steerability_stride,
                      "use a whole number >= 1 (1: every layer)")
        if self.steerability_items is not None and self.steerability_items < 2:
            raise bad("steerability_items", self.steerability_items,
                      "use at least 2 items or None (the whole test split)")
        if self.tax_documents < 1:
            raise bad("tax_documents", self.tax_documents, "use at least 1 document")
        if self.tax_max_tokens < 2:
            raise bad("tax_max_tokens", self.tax_max_tokens, "use at least 2 tokens")
        if self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "use a batch size >= 1")
        if self.n_resamples < 10:
            raise bad("n_resamples", self.n_resamples, "use at least 10 resamples")


def profile(name: str, **overrides: Any) -> MultiBehaviourConfig:
    """A named A/B configuration, with fields replaced by ``overrides`` (``"model.dtype"``
    style keys reach the model config).

    * ``"standard"`` — the embedded model on the CPU with the paper's files (all five
      behaviours, the paper's 500/200/300 splits), the grid at the paper's layer scaled
      (14), a steerability profile over every fourth layer (34 minutes on two
      cores; resumable).
    * ``"paper"`` — Llama-2-7b-chat on a GPU, all five behaviours, the paper's splits,
      layers 11-15 and scales -2..2.

    The ``quick`` profile of the multi-behaviour experiment is the comparison on
    behaviours the embedded model expresses
    (:class:`~actsteer.paper.multi_behaviour.expressed.ExpressedConfig`);
    :func:`actsteer.paper.multi_behaviour.profile` builds all three.
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown A/B profile {name!r}; use one of {', '.join(PROFILES)} "
                          "(quick is multi_behaviour.profile('quick'), the expressed "
                          "behaviours)")
    return PROFILES[name]().with_overrides(overrides)


def _standard() -> MultiBehaviourConfig:
    # SmolLM2 has 30 blocks: 14 is the paper's 15-of-32 scaled; the steerability profile
    # (every 4th layer and 14) shows where else a behaviour steers. Sized to finish in
    # about 35 minutes on two cores (34 measured).
    return MultiBehaviourConfig(
        model=ModelConfig(device="cpu"),
        behaviours=PAPER_BEHAVIOURS,
        grid_layers=(14,),
        grid_multipliers=(-8.0, -4.0, 4.0, 8.0),
        combined_variants=("weighted_mean",),
        scales=(-1.0, 1.0),
        steerability_stride=4,
        steerability_multipliers=(-8.0, 0.0, 8.0),
        steerability_items=60,
        letter_free_items=100,
        tax_corpus="wikitext", tax_documents=20, tax_max_tokens=256,
        batch_size=32, out_dir="results/multi_behaviour_standard",
    )


def _paper() -> MultiBehaviourConfig:
    return MultiBehaviourConfig(
        model=ModelConfig(name="meta-llama/Llama-2-7b-chat-hf", device="cuda"),
        behaviours=PAPER_BEHAVIOURS,
        grid_layers=(11, 12, 13, 14, 15),
        grid_multipliers=(-10.0, -5.0, -3.0, -2.0, -1.0, -0.5,
                          0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
        combined_layer=PAPER_LAYER,
        simultaneous_layers=dict(PAPER_SIMULTANEOUS_LAYERS),
        scales=tuple(x / 4 for x in range(-8, 9) if x != 0),
        tax_documents=200, tax_max_tokens=512,
        batch_size=16, out_dir="results/multi_behaviour_paper",
    )


PROFILES = {"standard": _standard, "paper": _paper}
"""Named profiles (functions, so that each call builds a fresh config)."""
