"""Multi-behaviour steering (van der Weij, Poesio & Schoots 2024, sections 3-4).

Steps, each resumable cell by cell (``out_dir/multi_behaviour.json``):

1. **vectors** — a CAA vector per behaviour (last token, every layer) from the vector split,
   saved to ``out_dir/vectors/<behaviour>.safetensors`` and reused on re-runs;
2. **default** — the unsteered model on the grid and test splits;
3. **grid** — per behaviour, layers × multipliers on the grid split, each layer swept
   outward from 0 in each direction and stopped at mode collapse (one answer token for
   more than ``max_top_share`` of items) or too many faulty answers (> ``max_faulty``);
   the chosen subtract/add settings are those with the largest effect on the matching
   rate among the cells that did not collapse;
4. **individual** — each behaviour on its test split with its chosen subtract/add setting;
5. **combined** — one vector from all behaviours (sum or mean, unweighted or weighted by
   the chosen add multipliers), added and subtracted at ``combined_layer``, scored on
   every behaviour;
6. **simultaneous** — each behaviour's vector at its own layer with its own chosen add
   multiplier, one global scale swept over ``scales``, scored on every behaviour;
7. **alignment tax** — next-token top-1 accuracy on a text corpus under the simultaneous
   plan at each scale.

Run ``python -m experiments.multi_behaviour --profile quick --out /tmp/mb``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from actsteer.accuracy import next_token_accuracy
from actsteer.batching import encode_many
from actsteer.behaviours import (
    BUILTIN_BEHAVIOURS,
    PAPER_BEHAVIOURS,
    PAPER_FILES,
    PAPER_SEED,
    PAPER_SPLIT_SIZES,
    BehaviourDataset,
    PaperSplits,
    canonical_name,
    default_data_dir,
    load_behaviour,
)
from actsteer.evaluation import ABScores, answer_token_ids, encode_items, score_items
from actsteer.extraction import ContrastivePair, caa_vector
from actsteer.figures.behaviours import combined_variant
from actsteer.models import EMBEDDED_MODEL, load_model
from actsteer.plan import SteeringPlan, combined, empty_plan, simultaneous, single
from actsteer.results import ResultStore, read_results
from actsteer.vector import SteeringVector
from experiments._common import ConfigError, ConfigMixin, invalid, scale_layer

logger = logging.getLogger(__name__)

RESULTS_FILE = "multi_behaviour.json"
PAPER_SIMULTANEOUS_LAYERS: dict[str, int] = {
    "myopia": 11, "wealth_seeking": 12, "sycophancy": 13, "agreeableness": 14,
    "anti_immigration": 15,
}
"""Layer of each behaviour in the paper's simultaneous steering (Llama 2, 32 layers)."""
PAPER_LAYER = 15
COMBINED_VARIANTS: tuple[str, ...] = ("sum", "mean", "weighted_sum", "weighted_mean")
PROMPT_FORMATS = ("paper", "chat")
BACKENDS = ("hooked", "bridge")
TAX_CORPORA = ("wikitext", "builtin", "none")
DTYPES = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")


@dataclass(frozen=True)
class MultiBehaviourConfig(ConfigMixin):
    """Everything that determines the results of :func:`run` (JSON round-trippable)."""

    model: str = EMBEDDED_MODEL
    """Model name or local Hugging Face folder, as :func:`actsteer.load_model` takes."""
    backend: str = "hooked"
    """``"hooked"`` (HookedTransformer) or ``"bridge"`` (TransformerBridge)."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ... (None: TransformerLens's choice)."""
    dtype: str = "float32"
    """Model dtype: ``float32``, ``bf16`` or ``fp16``."""
    behaviours: tuple[str, ...] = ("myopia", "wealth_seeking")
    """Behaviour names (see :data:`actsteer.behaviours.PAPER_BEHAVIOURS`) or dataset paths."""
    data_dir: str | None = None
    """Folder with the paper's behaviour files; None: the shared folder when found, else
    the built-in sets (myopia and wealth_seeking only)."""
    prompt_format: str = "paper"
    """``"paper"`` (raw Human/AI prompt) or ``"chat"`` (model chat template + answer stem)."""
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
    """A grid cell failed when more than this share of answers is faulty."""
    combined_layer: int | None = None
    """Layer of the combined vector (None: the paper's layer 15 scaled)."""
    combined_variants: tuple[str, ...] = COMBINED_VARIANTS
    """Combined vectors to try: sum, mean, weighted_sum, weighted_mean (each added and
    subtracted). Unweighted ones use the mean chosen add multiplier as coefficient."""
    simultaneous_layers: Mapping[str, int] | None = None
    """Behaviour → layer for simultaneous steering (None: the paper's 11..15 scaled)."""
    scales: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
    """Global scales of the simultaneous plan (0, the unsteered model, is always reported)."""
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
        object.__setattr__(self, "behaviours", tuple(self.behaviours))
        object.__setattr__(self, "grid_multipliers",
                           tuple(float(m) for m in self.grid_multipliers))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "combined_variants", tuple(self.combined_variants))
        if self.grid_layers is not None:
            object.__setattr__(self, "grid_layers", tuple(self.grid_layers))
        if self.simultaneous_layers is not None:
            object.__setattr__(self, "simultaneous_layers", dict(self.simultaneous_layers))
        self._validate()

    def _validate(self) -> None:
        bad = invalid
        if self.backend not in BACKENDS:
            raise bad("backend", self.backend, "use 'hooked' or 'bridge'")
        if self.dtype not in DTYPES:
            raise bad("dtype", self.dtype, f"use one of {', '.join(DTYPES)}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise bad("prompt_format", self.prompt_format, "use 'paper' or 'chat'")
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
        if self.tax_documents < 1:
            raise bad("tax_documents", self.tax_documents, "use at least 1 document")
        if self.tax_max_tokens < 2:
            raise bad("tax_max_tokens", self.tax_max_tokens, "use at least 2 tokens")
        if self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "use a batch size >= 1")
        if self.n_resamples < 10:
            raise bad("n_resamples", self.n_resamples, "use at least 10 resamples")


def behaviour_key(spec: str) -> str:
    """Short name of a behaviour spec: a paper name (aliases such as ``"myopic"`` or
    ``"Wealth Seeking"`` resolved), or a file's stem."""
    if spec.endswith((".json", ".jsonl")) or "/" in spec:
        stem = Path(spec).stem
        for name, filename in PAPER_FILES.items():
            if Path(filename).stem == stem:
                return name
        return stem
    return canonical_name(spec)


def profile(name: str, **overrides: Any) -> MultiBehaviourConfig:
    """A named configuration, with fields replaced by ``overrides``.

    * ``"quick"`` — the embedded SmolLM2-135M on the CPU, myopia and wealth_seeking,
      small splits and grids (a few minutes on two cores); the paper's layers scaled to
      the loaded model's depth at run time.
    * ``"paper"`` — Llama-2-7b-chat on a GPU, all five behaviours, the paper's splits,
      layers 11-15 and scales -2..2.
    """
    if name == "quick":
        # Layers stay None: run() scales the paper's 15-of-32 (and 11..15 for the
        # simultaneous plan) to the loaded model's depth (14 of SmolLM2's 30).
        base = MultiBehaviourConfig(
            model=EMBEDDED_MODEL, device="cpu", dtype="float32",
            behaviours=("myopia", "wealth_seeking"),
            n_vector=32, n_grid=16, n_test=24,
            grid_layers=None,
            grid_multipliers=(-8.0, -4.0, 4.0, 8.0),
            combined_layer=None,
            combined_variants=("weighted_mean",),
            scales=(-2.0, -1.0, 1.0, 2.0),
            tax_corpus="wikitext", tax_documents=6, tax_max_tokens=128,
            batch_size=24, n_resamples=500, out_dir="results/multi_behaviour_quick",
        )
    elif name == "paper":
        base = MultiBehaviourConfig(
            model="meta-llama/Llama-2-7b-chat-hf", device="cuda", dtype="float32",
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
    else:
        raise ConfigError(f"unknown profile {name!r}; use 'quick' or 'paper'")
    MultiBehaviourConfig.check_keys(overrides)
    return replace(base, **overrides)


# --------------------------------------------------------------------------- data


def load_datasets(config: MultiBehaviourConfig) -> dict[str, BehaviourDataset]:
    """Each behaviour of ``config``: from ``data_dir``, else the shared paper files when
    found, else the built-ins (myopia, wealth_seeking)."""
    found = default_data_dir() if config.data_dir is None else Path(config.data_dir)
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise FileNotFoundError(f"data_dir={config.data_dir!r} is not a folder; pass the "
                                "folder holding the paper's behaviour files")
    out: dict[str, BehaviourDataset] = {}
    for spec in config.behaviours:
        key = behaviour_key(spec)
        if spec.endswith((".json", ".jsonl")) or "/" in spec:
            dataset = load_behaviour(Path(spec))
        elif key in PAPER_FILES and found is not None and (found / PAPER_FILES[key]).is_file():
            dataset = load_behaviour(key, data_dir=found)
        elif key in BUILTIN_BEHAVIOURS and config.data_dir is None:
            dataset = load_behaviour(key)
        else:
            dataset = load_behaviour(key, data_dir=found)
        logger.info("behaviour %s: %d items from %s", key, len(dataset), dataset.source)
        out[key] = dataset
    return out


def split_dataset(dataset: BehaviourDataset, config: MultiBehaviourConfig) -> PaperSplits:
    """Shuffle with ``config.seed`` and cut ``[0:n_vector]``, ``[..:+n_grid]``, test."""
    n_vector = config.n_vector or PAPER_SPLIT_SIZES[0]
    n_grid = config.n_grid or PAPER_SPLIT_SIZES[1]
    n_test = config.n_test or len(dataset) - n_vector - n_grid
    if n_test < 1 or n_vector + n_grid + n_test > len(dataset):
        raise ConfigError(
            f"behaviour {dataset.name!r} ({dataset.source}) has {len(dataset)} items, too "
            f"few for n_vector={n_vector}, n_grid={n_grid}, n_test={n_test}; pass smaller "
            "sizes")
    return dataset.splits((n_vector, n_grid, n_test), seed=config.seed)


def _digest(parts: Sequence[str]) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _items_digest(dataset: BehaviourDataset) -> str:
    return _digest([f"{i.question}|{i.matching}|{i.not_matching}" for i in dataset])


def data_identity(splits: Mapping[str, PaperSplits], tax_texts: Sequence[str] | None
                  ) -> dict[str, Any]:
    """What was actually loaded: per behaviour, the source and a digest of each split's
    items; and a digest of the alignment-tax texts. Part of the results identity, because
    ``data_dir=None`` or ``tax_corpus="wikitext"`` resolve to other files (or to the
    built-ins) on another machine or working directory with the same config."""
    return {"behaviours": {b: {"source": sp.vector.source,
                               **{name: _items_digest(getattr(sp, name))
                                  for name in ("vector", "grid", "test")}}
                           for b, sp in splits.items()},
            "tax_texts": None if tax_texts is None else _digest(tax_texts)}


@dataclass(frozen=True)
class Prepared:
    """A split tokenised once: prompts and answer token ids."""

    prompts: list[list[int]]
    matching: list[int]
    not_matching: list[int]


def prepare(model: Any, dataset: BehaviourDataset, fmt: str) -> Prepared:
    ids = answer_token_ids(model, dataset.kind)
    prompts = encode_items(model, dataset.questions, dataset.kind, fmt)  # type: ignore[arg-type]
    return Prepared(prompts, [ids[i.matching] for i in dataset],
                    [ids[i.not_matching] for i in dataset])


# --------------------------------------------------------------------------- cells


def _fmt(x: float) -> str:
    return f"{x:+g}"


def _cell(scores: ABScores, index: int, config: MultiBehaviourConfig,
          **extra: Any) -> dict[str, Any]:
    summary = scores.summary(index, n_resamples=config.n_resamples)
    summary["items"] = scores.items(index)
    summary.update(extra)
    return summary


@dataclass
class _Runner:
    config: MultiBehaviourConfig
    model: Any
    store: ResultStore
    progress: bool
    data: dict[str, dict[str, Prepared]] = field(default_factory=dict)
    scored: int = 0

    def score(self, behaviour: str, split: str, plans: Sequence[SteeringPlan],
              desc: str) -> ABScores:
        prepared = self.data[behaviour][split]
        self.scored += len(plans) * len(prepared.prompts)
        return score_items(self.model, prepared.prompts, prepared.matching,
                           prepared.not_matching, plans, batch_size=self.config.batch_size,
                           progress=self.progress, desc=desc)

    def cell(self, key: str, behaviour: str, split: str, plan: SteeringPlan,
             **extra: Any) -> dict[str, Any]:
        """The stored cell ``key``, scoring it first if absent or made by another plan
        (e.g. a changed chosen multiplier)."""
        return self.cells(behaviour, split, [(key, plan, extra)])[key]

    def cells(self, behaviour: str, split: str,
              wanted: Sequence[tuple[str, SteeringPlan, Mapping[str, Any]]]
              ) -> dict[str, dict[str, Any]]:
        """Several cells of one behaviour and split: the stale ones scored together in
        one :func:`score_items` call (one forward per question per plan, sharing the
        unsteered prefix), each stored as soon as the call returns."""
        stale = [(key, plan, extra) for key, plan, extra in wanted
                 if not _fresh(self.store, key, plan.describe())]
        if stale:
            desc = stale[0][0] if len(stale) == 1 else (
                f"{stale[0][0].split('/')[0]}/{behaviour} ({len(stale)} plans)")
            scores = self.score(behaviour, split, [plan for _, plan, _ in stale], desc)
            for index, (key, plan, extra) in enumerate(stale):
                self.store.put(key, _cell(scores, index, self.config,
                                          plan=plan.describe(), **extra))
        return {key: self.store.get(key) for key, _, _ in wanted}


def _fresh(store: ResultStore, key: str, description: str) -> bool:
    """Whether ``key`` is stored and was made by the plan ``description``."""
    if not store.has(key):
        return False
    stored = store.get(key).get("plan", description)
    if stored != description:
        logger.warning("%s was scored under another plan (%s); scoring it again", key, stored)
    return bool(stored == description)


def _is_failed(cell: Mapping[str, Any], config: MultiBehaviourConfig,
               default_top_share: float = 0.0) -> str | None:
    """``"collapse"``, ``"faulty"`` or ``None``. Collapse is only detectable when the
    unsteered model is not itself collapsed (small models often always answer "A")."""
    if default_top_share <= config.max_top_share < cell["top_answer_share"]:
        return "collapse"
    if cell["faulty_rate"]["value"] > config.max_faulty:
        return "faulty"
    return None


def choose(grid: Mapping[str, Mapping[str, Any]], default_rate: float,
           direction: int, default_p: float | None = None) -> dict[str, Any] | None:
    """The non-failed grid cell with the largest effect on the matching rate in
    ``direction`` (+1 add, -1 subtract); ties broken by P(matching), then the smaller
    |multiplier|. Only cells that move the behaviour the intended way count: the matching
    rate moves in ``direction``, or it is unchanged and P(matching) moves in ``direction``
    (when ``default_p`` is given). ``None`` when no cell qualifies."""
    best: tuple[float, float, float] | None = None
    chosen: dict[str, Any] | None = None
    for cell in grid.values():
        if cell.get("failed") or math.copysign(1, cell["multiplier"]) != direction:
            continue
        rate_effect = direction * (cell["matching_rate"]["value"] - default_rate)
        p_value = cell["p_matching"]["value"]
        helps = rate_effect > 0 or (rate_effect == 0 and default_p is not None
                                    and direction * (p_value - default_p) > 0)
        if not helps:
            continue
        rank = (rate_effect, direction * p_value, -abs(cell["multiplier"]))
        if best is None or rank > best:
            best, chosen = rank, {"layer": cell["layer"], "multiplier": cell["multiplier"],
                                  "grid_matching_rate": cell["matching_rate"]["value"],
                                  "grid_p_matching": p_value}
    return chosen


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("step %s", step)
    try:
        yield
    finally:
        timings[step] = round(timings.get(step, 0.0) + time.perf_counter() - start, 3)


def _tax_texts(config: MultiBehaviourConfig) -> list[str]:
    from actsteer.corpora import builtin_text_corpus, text_corpus, wikitext_corpus

    if config.tax_corpus == "builtin":
        corpus = builtin_text_corpus()
    elif config.tax_corpus == "wikitext":
        try:
            corpus = wikitext_corpus(max_documents=config.tax_documents)
        except FileNotFoundError as error:
            logger.warning("%s; using the built-in English corpus for the alignment tax",
                           error)
            corpus = builtin_text_corpus()
    else:
        corpus = text_corpus(config.tax_corpus, max_documents=config.tax_documents)
    return corpus.texts()[: config.tax_documents]


def run(config: MultiBehaviourConfig, *, model: Any = None,
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment and return its results (also in the results file).

    Finished cells in ``out_dir/multi_behaviour.json`` are reused; a results file made
    with a different config raises :class:`actsteer.results.ResultConfigMismatchError`.
    """
    out_dir = Path(config.out_dir)
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        datasets = load_datasets(config)
        splits = {b: split_dataset(d, config) for b, d in datasets.items()}
        tax_texts = _tax_texts(config) if config.tax_corpus != "none" else None
        identity = data_identity(splits, tax_texts)
        store = ResultStore(out_dir / RESULTS_FILE,
                            {**config.results_config(), "data": identity})
        store.flush()  # the identity is on disk before any vector is saved beside it
        if model is None:
            model = load_model(config.model, backend=config.backend,  # type: ignore[arg-type]
                               device=config.device, dtype=config.dtype)
    n_layers = int(model.cfg.n_layers)
    grid_layers = config.grid_layers or (scale_layer(PAPER_LAYER, n_layers),)
    combined_layer = (config.combined_layer if config.combined_layer is not None
                      else scale_layer(PAPER_LAYER, n_layers))
    sim_layers = dict(config.simultaneous_layers or {
        b: scale_layer(PAPER_SIMULTANEOUS_LAYERS.get(b, PAPER_LAYER), n_layers)
        for b in datasets})
    for what, layer in [*(("grid layer", x) for x in grid_layers),
                        ("combined_layer", combined_layer),
                        *((f"simultaneous layer of {b}", x) for b, x in sim_layers.items())]:
        if layer >= n_layers:
            raise ConfigError(f"{what} {layer} is outside the model's {n_layers} layers; "
                              f"use 0..{n_layers - 1}")
    runner = _Runner(config, model, store, progress)
    for behaviour, split in splits.items():
        runner.data[behaviour] = {name: prepare(model, getattr(split, name),
                                                config.prompt_format)
                                  for name in ("grid", "test")}

    vectors: dict[str, SteeringVector] = {}
    with _timed(timings, "vectors"):
        for behaviour, split in splits.items():
            path = out_dir / "vectors" / f"{behaviour}.safetensors"
            stamp = path.with_suffix(".sha1")
            made_from = (f"{config.model} {config.prompt_format} "
                         f"{identity['behaviours'][behaviour]['vector']}")
            if path.is_file() and stamp.is_file() and stamp.read_text().strip() == made_from:
                vectors[behaviour] = SteeringVector.load(path, model=model)
                continue
            if path.is_file():
                logger.warning("%s was made from other items, format or model; extracting "
                               "it again", path)
            pairs = [ContrastivePair(p, item.matching, item.not_matching) for item, p in zip(
                split.vector, _formatted(model, split.vector, config.prompt_format),
                strict=True)]
            vectors[behaviour] = caa_vector(model, pairs, dataset=behaviour,
                                            batch_size=config.batch_size, progress=progress)
            vectors[behaviour].save(path)
            stamp.write_text(made_from + "\n")

    defaults: dict[str, dict[str, Any]] = {}
    with _timed(timings, "default"):
        for behaviour in splits:
            defaults[behaviour] = {
                split: runner.cell(f"default/{behaviour}/{split}", behaviour, split,
                                   empty_plan()) for split in ("grid", "test")}

    chosen: dict[str, dict[str, Any]] = {}
    with _timed(timings, "grid"):
        for behaviour in splits:
            grid: dict[str, dict[str, Any]] = {}
            default_share = defaults[behaviour]["grid"]["top_answer_share"]
            if default_share > config.max_top_share:
                logger.warning(
                    "%s: the unsteered model already gives one answer for %.0f%% of grid "
                    "items, so mode collapse cannot be detected; stopping on faulty "
                    "answers only", behaviour, 100 * default_share)
            for layer in grid_layers:
                for direction in (-1, 1):
                    ladder = sorted((m for m in config.grid_multipliers
                                     if math.copysign(1, m) == direction), key=abs)
                    for multiplier in ladder:
                        key = f"grid/{behaviour}/L{layer}/{_fmt(multiplier)}"
                        plan = single(vectors[behaviour], layer, multiplier)
                        cell = runner.cell(key, behaviour, "grid", plan, layer=layer,
                                           multiplier=multiplier)
                        failed = _is_failed(cell, config, default_share)
                        grid[key] = {**cell, "failed": failed}
                        if failed:
                            logger.info("%s: %s, stopping this direction", key, failed)
                            break
            base = defaults[behaviour]["grid"]["matching_rate"]["value"]
            base_p = defaults[behaviour]["grid"]["p_matching"]["value"]
            chosen[behaviour] = {"subtract": choose(grid, base, -1, base_p),
                                 "add": choose(grid, base, 1, base_p)}
            logger.info("chosen for %s: %s", behaviour, chosen[behaviour])
        store.set_extra("chosen", chosen)

    with _timed(timings, "individual"):
        for behaviour in splits:
            for which in ("subtract", "add"):
                pick = chosen[behaviour][which]
                if pick is None:
                    logger.warning("%s: no %s setting survived the grid", behaviour, which)
                    continue
                plan = single(vectors[behaviour], pick["layer"], pick["multiplier"])
                runner.cell(f"individual/{behaviour}/{which}", behaviour, "test", plan,
                            layer=pick["layer"], multiplier=pick["multiplier"])

    add_coefficient = {b: _add_coefficient(chosen[b], config) for b in splits}
    # Each step's plans for one behaviour are scored in one call, so they share the
    # unsteered prefix below their lowest steered layer.
    with _timed(timings, "combined"):
        combined_plans = [
            (f"combined/{variant}/{label}", combined_plan(
                vectors, combined_layer, variant, add_coefficient, sign),
             {"layer": combined_layer, "variant": variant, "sign": sign})
            for variant in config.combined_variants
            for sign, label in ((-1.0, "subtract"), (1.0, "add"))]
        for behaviour in splits:
            runner.cells(behaviour, "test", [(f"{prefix}/{behaviour}", plan, extra)
                                             for prefix, plan, extra in combined_plans])

    spec = {b: (vectors[b], sim_layers[b], add_coefficient[b]) for b in splits}
    with _timed(timings, "simultaneous"):
        simultaneous_plans = [(f"simultaneous/{_fmt(scale)}", simultaneous(spec, scale=scale),
                               {"scale": scale}) for scale in config.scales if scale != 0]
        for behaviour in splits:
            runner.cells(behaviour, "test", [(f"{prefix}/{behaviour}", plan, extra)
                                             for prefix, plan, extra in simultaneous_plans])

    with _timed(timings, "alignment_tax"):
        if tax_texts is not None:  # None when tax_corpus="none"
            tax_plans = {s: simultaneous(spec, scale=s) if s else empty_plan()
                         for s in (0.0, *config.scales)}
            pending = [s for s, p in tax_plans.items()
                       if not _fresh(store, f"tax/{_fmt(s)}", p.describe())]
            if pending:
                sequences = [ids[: config.tax_max_tokens]
                             for ids in encode_many(model, tax_texts)]
                sequences = [s for s in sequences if len(s) >= 2]
                for scale in pending:
                    plan = tax_plans[scale]
                    accuracy = next_token_accuracy(model, sequences, plan,
                                                   batch_size=config.batch_size)
                    estimate = accuracy.estimate("top1", n_resamples=config.n_resamples)
                    store.put(f"tax/{_fmt(scale)}", {"scale": scale, "top1": estimate.as_dict(),
                                                     "tokens": int(accuracy.tokens.sum()),
                                                     "documents": len(sequences),
                                                     "plan": plan.describe()})

    layers = {"grid": list(grid_layers), "combined": combined_layer,
              "simultaneous": sim_layers, "n_layers": n_layers}
    store.set_extra("behaviours", list(splits))
    store.set_extra("layers", layers)
    store.set_extra("coefficients", add_coefficient)
    store.set_extra("timings", timings)
    partial = {"cells": store.cells, "config": config.to_dict(), "behaviours": list(splits)}
    store.set_extra("steerability_slopes", steerability_slopes(partial))
    store.set_extra("interference", interference(partial))
    logger.info("multi-behaviour done: %d item-forwards scored this run; timings %s",
                runner.scored, timings)
    return {"config": config.to_dict(), "cells": dict(store.cells), "chosen": chosen,
            "coefficients": add_coefficient, "layers": layers, "timings": timings,
            "behaviours": list(splits), "path": str(store.path)}


def _formatted(model: Any, dataset: BehaviourDataset, fmt: str) -> list[str]:
    from actsteer.prompts import format_item

    return [format_item(q, dataset.kind, fmt, model.tokenizer)  # type: ignore[arg-type]
            for q in dataset.questions]


def _add_coefficient(chosen: Mapping[str, Any], config: MultiBehaviourConfig) -> float:
    """The behaviour's chosen add multiplier; when no add cell moved the behaviour (or all
    failed), the smallest positive grid multiplier, so that combined and simultaneous
    steering still have a weight for it (a warning says so; the results record
    ``chosen[b]["add"] = None``)."""
    if chosen.get("add") is not None:
        return float(chosen["add"]["multiplier"])
    fallback = min(m for m in config.grid_multipliers if m > 0)
    logger.warning("no add multiplier moved this behaviour on the grid split; combined and "
                   "simultaneous steering use the smallest positive one, %g", fallback)
    return fallback


def combined_plan(vectors: Mapping[str, SteeringVector], layer: int, variant: str,
                  add_coefficient: Mapping[str, float], sign: float) -> SteeringPlan:
    """The combined plan of ``variant``: ``sum``/``mean`` of the vectors (coefficient: the
    mean chosen add multiplier) or ``weighted_sum``/``weighted_mean`` (weights: each
    behaviour's chosen add multiplier, coefficient 1), times ``sign``."""
    if variant not in COMBINED_VARIANTS:
        raise ConfigError(f"unknown combined variant {variant!r}; use "
                          f"{', '.join(COMBINED_VARIANTS)}")
    mode = "mean" if variant.endswith("mean") else "sum"
    if variant.startswith("weighted"):
        weights = {b: add_coefficient[b] for b in vectors}
        return combined(dict(vectors), layer, weights=weights, mode=mode,  # type: ignore[arg-type]
                        coefficient=sign)
    coefficient = sum(abs(add_coefficient[b]) for b in vectors) / len(vectors)
    return combined(dict(vectors), layer, mode=mode,  # type: ignore[arg-type]
                    coefficient=sign * coefficient)


# --------------------------------------------------------------------------- report


def _metric(cell: Mapping[str, Any] | None, name: str) -> str:
    if cell is None:
        return "-"
    est = cell[name]
    return f"{est['value']:.2f} [{est['low']:.2f},{est['high']:.2f}]"


def _best_simultaneous(results: Mapping[str, Any], behaviour: str
                       ) -> tuple[float | None, Mapping[str, Any] | None]:
    """The simultaneous scale with the highest P(matching) for ``behaviour`` among those
    whose faulty share stays within ``max_faulty`` (a scale where the model no longer
    answers A or B is not a steering result); ``(None, None)`` if there is none."""
    max_faulty = float(results["config"].get("max_faulty", 1.0))
    best: tuple[float | None, Mapping[str, Any] | None] = (None, None)
    for key, cell in results["cells"].items():
        parts = key.split("/")
        if parts[0] != "simultaneous" or parts[2] != behaviour:
            continue
        if cell["faulty_rate"]["value"] > max_faulty:
            continue
        if best[1] is None or cell["p_matching"]["value"] > best[1]["p_matching"]["value"]:
            best = (float(parts[1]), cell)
    return best


def steerability_slopes(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per behaviour and grid layer: least-squares slope of P(matching) on the grid split
    against the multiplier (the unsteered model at 0 included, failed cells too), i.e.
    the change in P(matching) per unit coefficient. Beyond the paper."""
    cells = results["cells"]
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, cell in cells.items():
        parts = key.split("/")
        if parts[0] == "grid":
            points.setdefault((parts[1], parts[2]), []).append(
                (float(cell["multiplier"]), float(cell["p_matching"]["value"])))
    out: dict[str, dict[str, float]] = {}
    for (behaviour, layer), pts in sorted(points.items()):
        default = cells.get(f"default/{behaviour}/grid")
        if default is not None:
            pts = [(0.0, float(default["p_matching"]["value"])), *pts]
        xs = torch.tensor([x for x, _ in pts], dtype=torch.float64)
        ys = torch.tensor([y for _, y in pts], dtype=torch.float64)
        var = float(((xs - xs.mean()) ** 2).sum())
        slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum()) / var if var else 0.0
        out.setdefault(behaviour, {})[layer] = slope
    return out


def interference(results: Mapping[str, Any], metric: str = "p_matching",
                 scale: float = 1.0) -> dict[str, dict[str, float | None]]:
    """Per behaviour: effect (change from the unsteered test score in ``metric``) of its
    own vector added (``individual``), of the combined vector added (``combined``) and of
    simultaneous steering at ``scale`` (``simultaneous``), plus each of the latter two as a
    share of the individual effect (``None`` when the individual effect is ~0). Beyond the
    paper: a share below 1 means the other behaviours' vectors interfere."""
    cells = results["cells"]
    variant = combined_variant(results)
    out: dict[str, dict[str, float | None]] = {}
    for behaviour in results["behaviours"]:
        base = cells.get(f"default/{behaviour}/test")
        if base is None:
            continue

        def effect(key: str, base: Mapping[str, Any] = base) -> float | None:
            cell = cells.get(key)
            return None if cell is None else cell[metric]["value"] - base[metric]["value"]

        own = effect(f"individual/{behaviour}/add")
        row: dict[str, float | None] = {
            "individual": own,
            "combined": effect(f"combined/{variant}/add/{behaviour}"),
            "simultaneous": effect(f"simultaneous/{_fmt(scale)}/{behaviour}"),
        }
        for name in ("combined", "simultaneous"):
            other = row[name]
            row[f"{name}_share"] = (None if own is None or other is None or abs(own) < 1e-6
                                    else other / own)
        out[behaviour] = row
    return out


def summary_table(results: Mapping[str, Any]) -> str:
    """Behaviour × {default, subtract, add, combined add, best simultaneous scale}: matching
    rate and P(matching), each ``value [95% interval]`` on the test split ("simult max-P":
    the simultaneous scale with the highest P(matching) among those with at most
    ``max_faulty`` faulty answers), then interference, steerability
    slopes and the alignment tax."""
    cells = results["cells"]
    variant = combined_variant(results)
    columns = ["default", "subtract", "add", f"comb-{variant}+", "simult max-P"]
    lines = []
    for metric, title in (("matching_rate", "matching rate"), ("p_matching", "P(matching)")):
        lines.append(f"{title} (test split, value [95% CI])")
        header = f"{'behaviour':<18}" + "".join(f"{c:>20}" for c in columns)
        lines += [header, "-" * len(header)]
        for behaviour in results["behaviours"]:
            scale, sim = _best_simultaneous(results, behaviour)
            row = [cells.get(f"default/{behaviour}/test"),
                   cells.get(f"individual/{behaviour}/subtract"),
                   cells.get(f"individual/{behaviour}/add"),
                   cells.get(f"combined/{variant}/add/{behaviour}"), sim]
            lines.append(f"{behaviour:<18}" + "".join(f"{_metric(c, metric):>20}" for c in row))
        lines.append("")
    for behaviour in results["behaviours"]:
        pick = results["chosen"].get(behaviour, {})
        scale, _ = _best_simultaneous(results, behaviour)
        desc = ", ".join(f"{d} L{p['layer']} x{p['multiplier']:+g}" if p else f"{d} none"
                         for d, p in pick.items())
        lines.append(f"{behaviour}: chosen {desc}; best simultaneous scale "
                     f"{'-' if scale is None else f'{scale:+g}'}")
    lines.append("")
    lines.append("interference (change in P(matching) vs unsteered; share of individual)")
    for behaviour, shares in interference(results).items():
        lines.append(f"{behaviour:<18}" + "  ".join(
            f"{k}={'-' if v is None else f'{v:+.3f}'}" for k, v in shares.items()))
    lines.append("steerability (d P(matching) / d multiplier, grid split)")
    for behaviour, by_layer in steerability_slopes(results).items():
        lines.append(f"{behaviour:<18}" + "  ".join(
            f"{layer}: {slope:+.4f}" for layer, slope in by_layer.items()))
    tax = sorted((c["scale"], c["top1"]["value"]) for k, c in cells.items()
                 if k.startswith("tax/"))
    if tax:
        lines.append("alignment tax (top-1 next-token accuracy by scale): " + ", ".join(
            f"{s:+g}: {v:.3f}" for s, v in tax))
    return "\n".join(lines)


def load_results(path: str | Path) -> dict[str, Any]:
    """A finished ``multi_behaviour.json`` in the shape :func:`run` returns (for
    :func:`summary_table` and :func:`write_figures`)."""
    return read_results(path, needs=("behaviours", "chosen", "coefficients", "layers"))


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The experiment's HTML figures (see :mod:`actsteer.figures.behaviours`)."""
    from actsteer.figures.behaviours import write_figures as write

    return write(results, Path(out_dir))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.multi_behaviour`` is ``actsteer multi-behaviour`` (same options)."""
    from actsteer.cli import main as cli_main

    return cli_main(["multi-behaviour", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
