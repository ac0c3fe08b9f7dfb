"""Broad skills (van der Weij, Poesio & Schoots 2024, section 2): steer a whole skill away.

Steps, each resumable cell by cell (``out_dir/broad_skills.json``):

1. **corpora** — text, general code and Python, each split deterministically into
   training and validation documents (deduplicated, disjoint; see :func:`build_corpora`).
   Offline: text = WikiText-2 from the shared data folder (else the built-in English
   corpus), general code = :func:`actsteer.corpora.code_corpus` (a mix of the languages on
   this machine, capped per language so Python does not swamp it), Python = the standard
   library. Online (``source="hub"``): The Pile without GitHub, The Pile's GitHub and
   codeparrot-clean, as in the paper.
2. **vectors** — corpus means of each document's last-token block output
   (``resid_post``) at every layer, one pass per corpus; ``general = mean(text) −
   mean(code)``, ``python = mean(text) − mean(python)``, not normalised; controls with the
   same norm per layer: entries randomly permuted (the paper's control) and a random
   Gaussian direction. Saved to ``out_dir/vectors/`` and reused on re-runs.
3. **baseline** — unsteered next-token top-1 and top-k accuracy on each evaluation set:
   ``text``, ``python`` and ``code`` (the general-code validation documents that are not
   Python, so the Python vector's effect on *other* code shows).
4. **sweep** — per layer × vector, the vector added at every position of ``resid_post``
   with an increasing coefficient, every evaluation set scored at each coefficient,
   stopping after the first coefficient where the skill's relative top-1 accuracy falls
   below ``stop_below`` (5%). The skill of ``general*`` vectors is the ``code`` set, of
   ``python*`` vectors the ``python`` set.
5. **headline** — by linear interpolation, the relative text accuracy at the coefficient
   where the skill's top-1 accuracy is halved, per layer and vector. Its interval is a
   percentile bootstrap over documents: the skill's and the text's validation documents
   are resampled (independently of each other, the same resample at every coefficient),
   the two relative curves recomputed and the crossing interpolated again.

Relative accuracies are ``accuracy(c) / accuracy(0)`` pooled over tokens, with a paired
bootstrap interval over documents.

Difference from the paper: its evaluation streamed documents from the Hub, so each
coefficient saw different validation documents and the curves drifted between
coefficients. Here every coefficient (and every vector and layer) is scored on the SAME
validation documents, tokenised once; differences between coefficients are the vector's.

Run ``python -m experiments.broad_skills --profile quick --out /tmp/bs``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from actsteer.accuracy import DocumentAccuracy, count_hits, next_token_accuracy
from actsteer.batching import Batch, encode_many, length_batches, pad
from actsteer.corpora import (
    PYTHON,
    TEXT,
    Corpus,
    code_corpus,
    codeparrot_corpus,
    non_python_code,
    pile_github_corpus,
    pile_text_corpus,
    python_stdlib_corpus,
    text_corpus,
)
from actsteer.extraction import corpus_mean
from actsteer.models import EMBEDDED_MODEL, load_model, model_info
from actsteer.plan import SteeringPlan, single
from actsteer.results import ResultStore, read_results
from actsteer.skills import (
    STOP_BELOW,
    adaptive_sweep,
    bootstrap_half_skill,
    check_schedule,
    coefficient_key,
    other_of,
    paired_relative,
    paper_coefficients,
    skill_of,
)
from actsteer.steering import steer
from actsteer.sweep import supports_prefix_reuse
from actsteer.vector import SteeringVector, VectorMeta
from experiments._common import ConfigError, ConfigMixin, invalid, scale_layer

logger = logging.getLogger(__name__)

RESULTS_FILE = "broad_skills.json"
PAPER_LAYERS: tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30)
PAPER_LAYER = 15
BASE_VECTORS: tuple[str, ...] = ("general", "python")
CONTROLS: tuple[str, ...] = ("permuted", "random")
VECTOR_NAMES: tuple[str, ...] = BASE_VECTORS + tuple(
    f"{base}_{control}" for base in BASE_VECTORS for control in CONTROLS)
EVAL_SETS: tuple[str, ...] = ("text", "code", "python")
"""Evaluation sets: text, non-Python general code, Python."""
SOURCES = ("offline", "hub")
BACKENDS = ("hooked", "bridge")
DTYPES = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")
QUICK_COEFFICIENTS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Coarse schedule of the quick profile: on SmolLM2-135M the general and Python vectors at
layer 14 halve their skill between 1 and 2 (measured), so this brackets the headline."""


@dataclass(frozen=True)
class BroadSkillsConfig(ConfigMixin):
    """Everything that determines the results of :func:`run` (JSON round-trippable)."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = (
        "out_dir", "prefix_cache_mb", "batch_size", "device")
    """Fields that never change results (output folder and speed knobs)."""

    model: str = EMBEDDED_MODEL
    """Model name or local Hugging Face folder, as :func:`actsteer.load_model` takes."""
    backend: str = "hooked"
    """``"hooked"`` (HookedTransformer, prefix reuse) or ``"bridge"`` (TransformerBridge)."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ... (None: TransformerLens's choice)."""
    dtype: str = "float32"
    """Model dtype: ``float32``, ``bf16`` or ``fp16``."""
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
        if self.backend not in BACKENDS:
            raise bad("backend", self.backend, "use 'hooked' or 'bridge'")
        if self.dtype not in DTYPES:
            raise bad("dtype", self.dtype, f"use one of {', '.join(DTYPES)}")
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
      paper's layers 10 and 15 scaled to 9 and 14, the coarse :data:`QUICK_COEFFICIENTS`
      stopped once the skill falls below 25% (not the paper's 5%, to save time: the
      headline needs only the 50% crossing), the general and Python vectors at both
      layers and the permuted general control at layer 14 only; a few minutes on two
      idle cores.
    * ``"paper"`` — Llama-2-7b base on a GPU, the Hub corpora, 5,000 training documents,
      the paper's layers and full schedule, all controls.
    """
    if name == "quick":
        n_layers = 30
        base = BroadSkillsConfig(
            model=EMBEDDED_MODEL, device="cpu", dtype="float32", source="offline",
            n_train=48, n_valid=24, max_tokens=128,
            layers=tuple(scale_layer(layer, n_layers) for layer in (10, 15)),
            control_layers=(scale_layer(PAPER_LAYER, n_layers),),
            coefficients=QUICK_COEFFICIENTS, stop_below=0.25,
            vectors=("general", "python", "general_permuted"),
            max_per_language=40, batch_size=16, n_resamples=500,
            out_dir="results/broad_skills_quick",
        )
    elif name == "paper":
        base = BroadSkillsConfig(
            model="meta-llama/Llama-2-7b-hf", device="cuda", dtype="float32", source="hub",
            n_train=5000, n_valid=500, max_tokens=1024, layers=PAPER_LAYERS,
            coefficients=paper_coefficients(), vectors=VECTOR_NAMES,
            batch_size=8, prefix_cache_mb=0, out_dir="results/broad_skills_paper",
        )
    else:
        raise ConfigError(f"unknown profile {name!r}; use 'quick' or 'paper'")
    BroadSkillsConfig.check_keys(overrides)
    try:
        if (isinstance(overrides.get("layers"), (list, tuple)) and overrides["layers"]
                and "control_layers" not in overrides and base.control_layers is not None):
            # Controls follow a layer override: the kept ones, else the deepest layer.
            layers = tuple(overrides["layers"])
            kept = tuple(x for x in base.control_layers if x in layers)
            overrides = {**overrides, "control_layers": kept or (max(layers),)}
        return replace(base, **overrides)
    except TypeError as error:
        raise ConfigError(f"bad override for profile {name!r}: {error}") from None


# --------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class SkillCorpora:
    """Training corpora of the three means and the three evaluation sets."""

    train: Mapping[str, Corpus]
    """``text``, ``code`` (general code, Python included) and ``python``."""
    valid: Mapping[str, Corpus]
    """``text``, ``code`` (non-Python code) and ``python``."""

    def language_mix(self) -> dict[str, dict[str, dict[str, int]]]:
        return {"train": {k: c.languages() for k, c in self.train.items()},
                "valid": {k: c.languages() for k, c in self.valid.items()}}

    def fingerprint(self) -> str:
        """SHA-1 of every document id per split and corpus: equal exactly when the same
        documents were chosen. Stored with results and vectors so that a resumed run never
        mixes cells (or reuses vectors) computed on other documents."""
        digest = hashlib.sha1()
        for split, pools in (("train", self.train), ("valid", self.valid)):
            for name in sorted(pools):
                ids = sorted(d.doc_id for d in pools[name].documents)
                digest.update(f"{split}/{name}:{','.join(ids)};".encode())
        return digest.hexdigest()


def _drop(corpus: Corpus, keys: set[str]) -> Corpus:
    """``corpus`` without the documents whose :attr:`Document.content_key` is in ``keys``."""
    return Corpus(corpus.name, tuple(d for d in corpus if d.content_key not in keys))


def _offline_pools(config: BroadSkillsConfig) -> tuple[Corpus, Corpus, Corpus]:
    text = text_corpus(config.text_path)
    kwargs: dict[str, Any] = {"max_per_language": config.max_per_language}
    if config.code_globs is not None:
        kwargs["globs"] = config.code_globs
    code = code_corpus(config.code_roots, **kwargs)
    return text, code, python_stdlib_corpus()


def _hub_pools(config: BroadSkillsConfig) -> tuple[Corpus, Corpus, Corpus]:
    n = config.n_train + config.n_valid
    return (pile_text_corpus(n, seed=config.seed), pile_github_corpus(n, seed=config.seed),
            codeparrot_corpus(n, seed=config.seed))


def build_corpora(config: BroadSkillsConfig,
                  pools: tuple[Corpus, Corpus, Corpus] | None = None) -> SkillCorpora:
    """Split text, general code and Python into disjoint train/validation sets.

    ``pools`` (text, code, python) replaces the configured sources (for tests). The
    Python validation documents are removed from the general-code pool first (offline,
    both read the standard library), so no evaluated document is ever in a training
    set. All code documents not used for training are validation candidates; the
    ``code`` evaluation set keeps the first ``n_valid`` of them that are not Python
    (Hub code has no language labels: there, every candidate counts as non-Python).
    """
    if pools is None:
        pools = _hub_pools(config) if config.source == "hub" else _offline_pools(config)
    text_pool, code_pool, python_pool = pools
    text = text_pool.split(config.n_train, config.n_valid, seed=config.seed)
    python = python_pool.split(config.n_train, config.n_valid, seed=config.seed)
    held_out = {d.content_key for d in python.valid} | {d.content_key for d in text.valid}
    code_pool = _drop(code_pool.deduplicated(), held_out)
    if len(code_pool) <= config.n_train:
        raise ValueError(
            f"the general-code corpus has {len(code_pool)} distinct documents; it needs more "
            f"than n_train={config.n_train} to leave validation documents (raise "
            "max_per_language, add code_roots or lower n_train)")
    code = code_pool.split(config.n_train, len(code_pool) - config.n_train, seed=config.seed)
    code_valid = non_python_code(code.valid)
    if len(code_valid) < config.n_valid:
        raise ValueError(
            f"only {len(code_valid)} non-Python code documents are left for validation, "
            f"n_valid={config.n_valid} needed; "
            + ("raise max_per_language or lower n_valid" if config.source == "offline"
               else "lower n_valid, or n_train to leave more of the streamed documents"))
    code_valid = code_valid.take(config.n_valid)
    train = {TEXT: text.train, "code": code.train, PYTHON: python.train}
    valid = {TEXT: text.valid, "code": code_valid, PYTHON: python.valid}
    return SkillCorpora(train, valid)


# --------------------------------------------------------------------------- vectors


def skill_vectors(model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
                  *, progress: bool = False) -> dict[str, SteeringVector]:
    """``general = mean(text) − mean(code)`` and ``python = mean(text) − mean(python)``
    (last-token ``resid_post`` at every layer, one pass per corpus) plus the controls
    named in ``config.vectors``."""
    layers = tuple(range(int(model.cfg.n_layers)))
    means = {name: corpus_mean(model, corpora.train[name].texts(), layers=layers,
                               read="last", max_tokens=config.max_tokens,
                               batch_size=config.batch_size, progress=progress,
                               desc=f"mean of {name}")
             for name in (TEXT, "code", PYTHON)}
    info = model_info(model)
    out: dict[str, SteeringVector] = {}
    for base, minus in (("general", "code"), ("python", PYTHON)):
        meta = VectorMeta(model=info.name, backend=info.backend,
                          weight_processing=info.weight_processing,
                          model_n_layers=info.n_layers, read_position="last",
                          method="corpus_mean_diff", dataset=f"text-minus-{minus}",
                          n_items=len(corpora.train[TEXT]) + len(corpora.train[minus]))
        out[base] = SteeringVector(means[TEXT] - means[minus], layers, "resid_post", meta)
    for name in config.vectors:
        if name in out:
            continue
        base, control = name.split("_", 1)
        out[name] = (out[base].permuted(config.seed) if control == "permuted"
                     else out[base].random_like(config.seed))
    return {name: out[name] for name in dict.fromkeys((*BASE_VECTORS, *config.vectors))}


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalSet:
    """One evaluation set tokenised once: documents, padded batches and prefix cache."""

    name: str
    sequences: list[list[int]]
    groups: list[list[int]]
    batches: list[Batch]
    cache: dict[int, list[torch.Tensor]]

    @property
    def tokens(self) -> torch.Tensor:
        return torch.tensor([len(s) - 1 for s in self.sequences], dtype=torch.long)


def make_eval_set(model: Any, name: str, texts: Sequence[str], *, max_tokens: int,
                  batch_size: int) -> EvalSet:
    """Tokenise (through :func:`encode_many`), truncate, drop documents under 2 tokens,
    and pad into right-padded, length-bucketed batches."""
    sequences = [ids[:max_tokens] for ids in encode_many(model, list(texts))]
    return eval_set_from_sequences(model, name, [s for s in sequences if len(s) >= 2],
                                   batch_size=batch_size)


def eval_set_from_sequences(model: Any, name: str, sequences: Sequence[Sequence[int]], *,
                            batch_size: int) -> EvalSet:
    """An :class:`EvalSet` of already tokenised documents (each at least 2 tokens)."""
    docs = [list(s) for s in sequences]
    if not docs or min(len(s) for s in docs) < 2:
        raise ValueError(f"evaluation set {name!r} needs documents of at least 2 tokens "
                         f"(shortest lengths: {sorted(len(s) for s in docs)[:5]})")
    groups = list(length_batches([len(s) for s in docs], batch_size))
    batches = [pad(model, [docs[i] for i in g], padding_side="right") for g in groups]
    return EvalSet(name, docs, groups, batches, {})


def steered_accuracy(model: Any, data: EvalSet, plan: SteeringPlan, layer: int, *, k: int,
                     cache_bytes: int = 0) -> DocumentAccuracy:
    """Per-document top-1/top-k accuracy of ``data`` under ``plan`` (steering block
    ``layer`` or later). With prefix reuse (``HookedTransformer``) and room in
    ``cache_bytes``, the unsteered stream entering block ``layer`` is computed once per
    batch and kept, so each further coefficient runs only blocks ``layer`` onwards."""
    n = len(data.sequences)
    top1 = torch.zeros(n, dtype=torch.long)
    topk = torch.zeros(n, dtype=torch.long)
    width = sum(b.tokens.numel() for b in data.batches) * int(model.cfg.d_model)
    size = width * torch.finfo(model.cfg.dtype).bits // 8
    reuse = supports_prefix_reuse(model) and size <= cache_bytes
    with torch.no_grad():
        if reuse and layer not in data.cache:
            data.cache.clear()  # sweeps go layer by layer: keep one layer's prefix at most
            data.cache[layer] = [model(b.tokens, attention_mask=b.attention_mask,
                                       stop_at_layer=layer) for b in data.batches]
        for index, (group, batch) in enumerate(zip(data.groups, data.batches, strict=True)):
            with steer(model, plan) as handle:
                handle.new_prompt(batch.starts)
                if reuse:
                    logits = model(data.cache[layer][index], start_at_layer=layer,
                                   tokens=batch.tokens, attention_mask=batch.attention_mask)
                else:
                    logits = model(batch.tokens, attention_mask=batch.attention_mask)
            hit_1, hit_k = count_hits(logits, batch, k)
            rows = torch.as_tensor(group)
            top1[rows] = hit_1
            topk[rows] = hit_k
            del logits
    return DocumentAccuracy(top1, topk, data.tokens, k)


def _accuracy_cell(acc: DocumentAccuracy, base: DocumentAccuracy | None,
                   config: BroadSkillsConfig) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "top1": acc.estimate("top1", n_resamples=config.n_resamples, seed=config.seed).as_dict(),
        "topk": acc.estimate("topk", n_resamples=config.n_resamples, seed=config.seed).as_dict(),
        "top1_docs": acc.top1.tolist(),
        "topk_docs": acc.topk.tolist(),
    }
    if base is not None:
        for metric, ours, theirs in (("top1", acc.top1, base.top1), ("topk", acc.topk, base.topk)):
            if int(theirs.sum()) == 0:  # e.g. a random model: relative accuracy undefined
                nan = float("nan")
                cell[f"rel_{metric}"] = {"value": nan, "low": nan, "high": nan,
                                         "n": len(ours)}
                continue
            cell[f"rel_{metric}"] = paired_relative(
                ours, theirs, acc.tokens, n_resamples=config.n_resamples,
                seed=config.seed).as_dict()
    return cell


def _from_cell(cell: Mapping[str, Any], tokens: torch.Tensor, k: int) -> DocumentAccuracy:
    return DocumentAccuracy(torch.tensor(cell["top1_docs"]), torch.tensor(cell["topk_docs"]),
                            tokens, k)


# --------------------------------------------------------------------------- run


def _load_or_extract(model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
                     out: Path, progress: bool) -> dict[str, SteeringVector]:
    folder = out / "vectors"
    wanted = list(dict.fromkeys((*BASE_VECTORS, *config.vectors)))
    paths = {name: folder / f"{name}.safetensors" for name in wanted}
    stamp = folder / "corpora.sha1"
    fingerprint = f"{config.model} {corpora.fingerprint()}"
    if all(p.is_file() for p in paths.values()):
        if stamp.is_file() and stamp.read_text().strip() == fingerprint:
            logger.info("reusing vectors in %s", folder)
            return {name: SteeringVector.load(p, model=model) for name, p in paths.items()}
        logger.warning("vectors in %s were made from other documents or another model; "
                       "extracting them again", folder)
    vectors = skill_vectors(model, corpora, config, progress=progress)
    for name, vector in vectors.items():
        vector.save(paths[name])
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return vectors


def is_swept(config: BroadSkillsConfig, vector: str, layer: int) -> bool:
    """Whether ``vector`` is swept at ``layer`` (controls only at ``control_layers``)."""
    return vector in BASE_VECTORS or config.control_layers is None or (
        layer in config.control_layers)


def _curve(store: ResultStore, vector: str, layer: int,
           coefficients: Sequence[float]) -> list[float]:
    return [c for c in coefficients if c == 0 or store.has(coefficient_key(vector, layer, c))]


def headline(store: ResultStore, evals: Mapping[str, EvalSet], config: BroadSkillsConfig,
             layers: Sequence[int]) -> dict[str, Any]:
    """Half-skill point per layer × vector: interpolated coefficient where the skill's
    relative top-1 is halved, and relative text top-1 (and other code set) there."""
    base = store.get("baseline")
    out: dict[str, Any] = {}
    for layer in layers:
        for vector in config.vectors:
            if not is_swept(config, vector, layer):
                continue
            skill = skill_of(vector)
            other = other_of(vector)
            coefs = _curve(store, vector, layer, config.coefficients)
            cells = [base if c == 0 else store.get(coefficient_key(vector, layer, c))
                     for c in coefs]

            def docs(name: str, cells: list[Any] = cells) -> torch.Tensor:
                return torch.tensor([cell[name]["top1_docs"] for cell in cells])

            entry: dict[str, Any] = {"skill": skill, "coefficients": coefs}
            for label, companion in ((TEXT, TEXT), ("other", other)):
                if min(sum(base[skill]["top1_docs"]), sum(base[companion]["top1_docs"])) == 0:
                    entry[label] = None  # no unsteered hit: relative accuracy undefined
                    continue
                found = bootstrap_half_skill(
                    coefs, docs(skill), evals[skill].tokens, docs(companion),
                    evals[companion].tokens, n_resamples=config.n_resamples,
                    seed=config.seed)
                entry[label] = None if found is None else found.as_dict()
            out[f"{vector}/L{layer}"] = entry
    return out


def run(config: BroadSkillsConfig, *, model: Any = None, progress: bool = True,
        corpora: SkillCorpora | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns a JSON-ready results dict with ``config``,
    ``cells``, ``headline``, ``language_mix``, ``timings`` and ``layers``."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if model is None:
        model = load_model(config.model, backend=config.backend,  # type: ignore[arg-type]
                           device=config.device, dtype=config.dtype)
    timings["load_model_s"] = time.perf_counter() - start
    n_layers = int(model.cfg.n_layers)
    layers = list(config.layers) if config.layers is not None else [
        scale_layer(PAPER_LAYER, n_layers)]
    too_deep = [layer for layer in layers if layer >= n_layers]
    if too_deep:
        raise ConfigError(f"layers={too_deep!r} are invalid: the model has {n_layers} layers "
                          f"(0..{n_layers - 1})")
    step = time.perf_counter()
    corpora = corpora if corpora is not None else build_corpora(config)
    # The documents are part of what determines results: text_path=None or code_roots=None
    # can resolve to other files on another machine with the same config.
    store = ResultStore(out / RESULTS_FILE,
                        config={**config.results_config(), "corpora": corpora.fingerprint()})
    mix = corpora.language_mix()
    store.set_extra("language_mix", mix)
    timings["corpora_s"] = time.perf_counter() - step

    step = time.perf_counter()
    vectors = _load_or_extract(model, corpora, config, out, progress)
    store.set_extra("vector_norms", {name: {str(layer): v.norms()[layer] for layer in layers}
                                     for name, v in vectors.items()})
    timings["vectors_s"] = time.perf_counter() - step

    evals = {name: make_eval_set(model, name, corpora.valid[name].texts(),
                                 max_tokens=config.max_tokens, batch_size=config.batch_size)
             for name in EVAL_SETS}
    cache_bytes = config.prefix_cache_mb * 2**20 // len(EVAL_SETS)

    step = time.perf_counter()
    if not store.has("baseline"):
        store.put("baseline", {
            name: {**_accuracy_cell(next_token_accuracy(
                model, data.sequences, None, k=config.k, batch_size=config.batch_size),
                None, config), "n_docs": len(data.sequences),
                "n_tokens": int(data.tokens.sum())}
            for name, data in evals.items()})
    baseline = {name: _from_cell(store.get("baseline")[name], data.tokens, config.k)
                for name, data in evals.items()}
    timings["baseline_s"] = time.perf_counter() - step

    step = time.perf_counter()
    jobs = [(layer, vector) for layer in layers for vector in config.vectors
            if is_swept(config, vector, layer)]
    bar = tqdm(total=len(jobs), desc="broad-skill sweeps", disable=not progress)
    for layer, vector in jobs:
        skill = skill_of(vector)

        def evaluate(coefficient: float, layer: int = layer, vector: str = vector,
                     skill: str = skill) -> float:
            if coefficient == 0:
                return 1.0
            key = coefficient_key(vector, layer, coefficient)
            if not store.has(key):
                began = time.perf_counter()
                plan = single(vectors[vector], layer, coefficient, label=vector)
                cell: dict[str, Any] = {"vector": vector, "layer": layer,
                                        "coefficient": coefficient}
                for name, data in evals.items():
                    acc = steered_accuracy(model, data, plan, layer, k=config.k,
                                           cache_bytes=cache_bytes)
                    cell[name] = _accuracy_cell(acc, baseline[name], config)
                cell["seconds"] = time.perf_counter() - began
                store.put(key, cell)
                logger.info("%s L%d x%g: %s", vector, layer, coefficient, ", ".join(
                    f"{n} {cell[n]['rel_top1']['value']:.2f}" for n in evals))
            value = store.get(key)[skill]["rel_top1"]["value"]
            return float("nan") if value is None else float(value)

        adaptive_sweep(config.coefficients, evaluate, stop_below=config.stop_below)
        bar.update(1)
    bar.close()
    for data in evals.values():
        data.cache.clear()
    timings["sweep_s"] = time.perf_counter() - step

    heads = headline(store, evals, config, layers)
    store.set_extra("layers", layers)
    store.set_extra("headline", heads)
    timings["total_s"] = time.perf_counter() - start
    timings["process_cpu_s"] = time.process_time()  # CPU of this process (all threads)
    store.set_extra("timings", timings)
    return {"config": config.to_dict(), "layers": layers, "cells": dict(store.cells),
            "headline": heads, "language_mix": mix, "timings": timings,
            "vector_norms": store.extra["vector_norms"], "path": str(store.path)}


# --------------------------------------------------------------------------- report


def _pct(est: Mapping[str, Any] | None) -> str:
    if est is None:
        return "-"
    if est["low"] is None or est["high"] is None or not math.isfinite(est["low"]):
        return f"{100 * est['value']:.1f}%"
    return f"{100 * est['value']:.1f}% [{100 * est['low']:.0f},{100 * est['high']:.0f}]"


def summary_table(results: Mapping[str, Any]) -> str:
    """Baselines, then per layer × vector: the half-skill coefficient, relative text top-1
    there (95% bootstrap interval over documents) and the other code set there."""
    base = results["cells"]["baseline"]
    lines = ["unsteered next-token accuracy (top-1 / top-k, validation documents):"]
    for name in EVAL_SETS:
        cell = base[name]
        lines.append(f"  {name:<7} top-1 {cell['top1']['value']:.3f}  top-k "
                     f"{cell['topk']['value']:.3f}  ({cell['n_docs']} docs, "
                     f"{cell['n_tokens']} tokens)")
    lines.append("")
    lines.append("at the coefficient where the skill's top-1 is halved (interpolated):")
    header = (f"{'layer':>5} {'vector':<17} {'skill':<6} {'coef':>13} "
              f"{'text rel top-1':>20} {'other code rel':>20} {'max coef':>8}")
    lines += [header, "-" * len(header)]
    for key, entry in results["headline"].items():
        vector, layer = key.rsplit("/L", 1)
        found = entry["text"]
        other = entry["other"]
        coef = "never halved" if found is None else (
            f"{found['coefficient']['value']:.2f}")
        lines.append(
            f"{layer:>5} {vector:<17} {entry['skill']:<6} {coef:>13} "
            f"{_pct(None if found is None else found['text_rel']):>20} "
            f"{_pct(None if other is None else other['text_rel']):>20} "
            f"{max(entry['coefficients']):>8g}")
    lines.append("(other code = the Python set for general vectors, non-Python code for "
                 "Python vectors)")
    return "\n".join(lines)


def load_results(path: str | Path) -> dict[str, Any]:
    """A finished ``broad_skills.json`` in the shape :func:`run` returns (for
    :func:`summary_table` and :func:`write_figures`)."""
    return read_results(path, needs=("layers", "headline"))


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The experiment's HTML figures (see :mod:`actsteer.figures.skills`)."""
    from actsteer.figures.skills import write_figures as write

    return write(results, Path(out_dir))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.broad_skills`` is ``actsteer broad-skills`` (same options)."""
    from actsteer.cli import main as cli_main

    return cli_main(["broad-skills", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
