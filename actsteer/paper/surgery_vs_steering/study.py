"""The surgery-versus-steering study: for each behaviour and direction, the arms
(:func:`~actsteer.paper.surgery_vs_steering.arms.build_arms`) measured on equal terms
(:func:`~actsteer.paper.surgery_vs_steering.compare.compare`).

Each (behaviour, direction) is one cell of the results log
``out_dir/surgery_vs_steering.jsonl`` (:mod:`actsteer.results`), appended as soon as it is
measured, under the settings that made it (and the backend and TransformerLens line that
ran it): an interrupted run resumes cell by cell, asking for more behaviours or directions
measures only those, and other settings are refused unless ``overwrite``. A
``comparison.json`` written whole by earlier versions of the study, with the same
settings, is carried into the log, so its comparisons are not measured again.

Example::

    settings = StudySettings(steer=(0.1, 0.25), surgery=(4.0, 8.0))
    cells = run_study(settings, ["sentiment"], [1, -1], "results/surgery")
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from actsteer.accuracy import Documents
from actsteer.atomic import atomic_write
from actsteer.batching import encode_many
from actsteer.data.corpora import builtin_text_corpus, wikitext_corpus
from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, load_expressed, neutral_prompts
from actsteer.errors import InvalidValueError
from actsteer.models.info import backend_of, resolve_backend, runtime_stamp
from actsteer.norms import residual_norms
from actsteer.paper.surgery_vs_steering.arms import build_arms
from actsteer.paper.surgery_vs_steering.compare import compare, vader_compound
from actsteer.results import ResultStore

__all__ = ["LEGACY_FILE", "RESULTS_FILE", "TABLE_FILE", "StudySettings", "cell_name",
           "run_study", "study_table"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "surgery_vs_steering.jsonl"
"""The study's results log, in its output folder."""

LEGACY_FILE = "comparison.json"
"""The whole-file results of earlier versions of the study (read, never written)."""

TABLE_FILE = "table.txt"
"""The plain-text tables of every comparison, beside the log."""


@dataclass(frozen=True)
class StudySettings:
    """What determines a comparison's numbers (the results log's config: the resume key).
    Which behaviours and directions are measured is not part of it: each is a cell."""

    layer: int = 18
    """Probe, CAA vector and steering layer (``resid_post``)."""
    k: int | None = None
    """Gate rows edited over all layers (None: the authors' 4.65%)."""
    steer: tuple[float, ...] = (0.1, 0.25)
    """Steering ladder, fractions of the median residual norm."""
    surgery: tuple[float, ...] = (4.0, 8.0)
    """Surgery ladder, the step added to each gate row."""
    no_control: bool = False
    """Skip the random-direction surgery."""
    no_folded: bool = False
    """Skip the folded-basis surgery (``surgery:folded``, reported beside the paper's)."""
    folded_surgery: tuple[float, ...] | None = None
    """Ladder of the folded-basis surgery (None: the ``surgery`` ladder). Its step acts on
    the normed stream at full size, where the paper's step is scaled by the norm weight
    first, so the same number is a larger edit. Left out of the results log's config
    while None, so logs made before the field existed resume."""
    target: float | None = None
    """A fixed effect (nats, > 0) to match; None: the weakest arm's reach."""
    prompts: int = len(neutral_prompts())
    """Held-out neutral prompts the behaviour is read after."""
    documents: int = 8
    """Documents for perplexity and top-1."""
    max_tokens: int = 128
    """Tokens per document."""
    generate: int = 8
    """Prompts continued greedily (VADER, throughput)."""
    new_tokens: int = 24
    """Tokens per continuation."""
    repeats: int = 3
    """Timed throughput rounds."""
    resamples: int = 1000
    """Bootstrap resamples."""

    def __post_init__(self) -> None:
        for name in ("prompts", "documents", "max_tokens", "new_tokens", "resamples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidValueError(f"{name}={getattr(self, name)!r} is invalid; use a "
                                        "whole number >= 1")
        for name in ("generate", "repeats"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InvalidValueError(f"{name}={getattr(self, name)!r} is invalid; use a "
                                        "whole number >= 0")
        if not self.steer or not self.surgery:
            raise InvalidValueError("steer and surgery each need at least one strength")
        if self.target is not None and not (math.isfinite(self.target) and self.target > 0):
            raise InvalidValueError(f"target={self.target!r} is invalid; use an effect > 0 "
                                    "or None")
        object.__setattr__(self, "steer", tuple(float(s) for s in self.steer))
        object.__setattr__(self, "surgery", tuple(float(s) for s in self.surgery))
        if self.folded_surgery is not None:
            if not self.folded_surgery:
                raise InvalidValueError("folded_surgery needs at least one strength, or None "
                                        "for the surgery ladder")
            object.__setattr__(self, "folded_surgery",
                               tuple(float(s) for s in self.folded_surgery))

    def to_dict(self) -> dict[str, Any]:
        """JSON fields, ladders as lists (as the study's results have always recorded)."""
        out = asdict(self)
        out["steer"], out["surgery"] = list(self.steer), list(self.surgery)
        if self.folded_surgery is None:
            del out["folded_surgery"]
        else:
            out["folded_surgery"] = list(self.folded_surgery)
        return out


def cell_name(behaviour: str, direction: int) -> str:
    """The results-log name of one comparison, e.g. ``sentiment:+1``."""
    return f"{behaviour}:{direction:+d}"


def _texts(n: int) -> tuple[str, list[str]]:
    try:
        return "wikitext-2", wikitext_corpus(max_documents=n).texts()[:n]
    except FileNotFoundError:
        return "built-in English corpus", builtin_text_corpus().texts()[:n]


def _carry_legacy(store: ResultStore, folder: Path) -> None:
    """Comparisons of a whole-file ``comparison.json`` made with the same settings, into
    the log (once: a cell already in the log is kept)."""
    legacy = folder / LEGACY_FILE
    if not legacy.is_file():
        return
    try:
        saved = json.loads(legacy.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InvalidValueError(f"{legacy} is not JSON ({error}); move it away to start "
                                "the study afresh") from None
    if not isinstance(saved, dict) or saved.get("settings") != store.config:
        logger.warning("%s was made with other settings; its comparisons are not used", legacy)
        return
    for name, entry in dict(saved.get("comparisons") or {}).items():
        if not store.has(name):
            store.put(name, entry)
            logger.info("%s: carried %s into %s", legacy, name, store.path.name)


def run_study(settings: StudySettings, behaviours: Sequence[str], directions: Sequence[int],
              out_dir: str | Path, *, model: Any = None, overwrite: bool = False,
              progress: bool = True) -> dict[str, dict[str, Any]]:
    """Measure (or resume) every asked (behaviour, direction); returns their cells
    (``{"setup", "result", "table", "seconds"}`` by :func:`cell_name`) and writes
    ``table.txt`` beside the log. ``model``: None loads the embedded model, only if a cell
    is missing.

    Raises:
        ResultConfigMismatchError: the log was made with other settings (pass
            ``overwrite=True`` to start it afresh, keeping the old file beside it).
    """
    unknown = sorted(set(behaviours) - set(EXPRESSED_BEHAVIOURS))
    if unknown or not behaviours:
        raise InvalidValueError(f"behaviours {unknown or '(none)'} are invalid; use some of "
                                f"{', '.join(EXPRESSED_BEHAVIOURS)}")
    if not directions or any(d not in (1, -1) for d in directions):
        raise InvalidValueError(f"directions {list(directions)} are invalid; use 1 (raise) "
                                "and/or -1 (lower)")
    folder = Path(out_dir)
    runtime = runtime_stamp(resolve_backend(None) if model is None else backend_of(model))
    with ResultStore(folder / RESULTS_FILE, settings.to_dict(), overwrite=overwrite,
                     runtime=runtime) as store:
        _carry_legacy(store, folder)
        todo = [(b, d) for b in behaviours for d in directions
                if not store.has(cell_name(b, d))]
        if todo:
            _measure(store, settings, todo, model, progress)
        cells = {cell_name(b, d): store.get(cell_name(b, d))
                 for b in behaviours for d in directions}
    text = study_table(cells)

    def write(scratch: Path) -> None:
        scratch.write_text(text + "\n", encoding="utf-8")

    atomic_write(folder / TABLE_FILE, write)
    return cells


def _measure(store: ResultStore, settings: StudySettings, todo: Sequence[tuple[str, int]],
             model: Any, progress: bool) -> None:
    if model is None:
        from actsteer.models import load_model

        model = load_model()
    source, texts = _texts(settings.documents)
    sequences = [ids[:settings.max_tokens] for ids in encode_many(model, texts)]
    norms = residual_norms(model, sequences, source=source)
    documents = Documents.build(model, sequences, batch_size=8)
    prompts = list(neutral_prompts())[:settings.prompts]
    for behaviour, direction in todo:
        began = time.perf_counter()
        data = load_expressed(behaviour)
        arms = build_arms(model, data.pairs(), layer=settings.layer, norms=norms,
                          direction=direction, k=settings.k, control=not settings.no_control,
                          folded=not settings.no_folded)
        ladders = {name: settings.steer if arm.kind == "steering" else settings.surgery
                   for name, arm in arms.arms.items()}
        if "surgery:folded" in ladders and settings.folded_surgery is not None:
            ladders["surgery:folded"] = settings.folded_surgery
        result = compare(model, arms.arms, data.words, prompts, ladders=ladders,
                         direction=direction, documents=documents,
                         generate_prompts=prompts[:settings.generate],
                         generate_tokens=settings.new_tokens,
                         text_score=vader_compound if behaviour == "sentiment" else None,
                         throughput_repeats=settings.repeats, audit_items=data.items(),
                         target=settings.target, n_resamples=settings.resamples,
                         progress=progress)
        cosine = torch.nn.functional.cosine_similarity(arms.probe.direction, arms.vector, dim=0)
        setup = {"layer": settings.layer, "probe_accuracy": arms.probe.accuracy,
                 "probe_caa_cosine": float(cosine), "caa_norm": float(arms.vector.norm()),
                 "median_norm": norms.median(settings.layer), "k": arms.region.n_rows,
                 "rows_per_layer": {str(k): len(v) for k, v in arms.region.rows.items()},
                 "folded_shared_rows": arms.shared_rows,
                 "perplexity_text": source}
        store.put(cell_name(behaviour, direction), {
            "setup": setup, "result": result.to_dict(), "table": result.table(),
            "seconds": round(time.perf_counter() - began, 1)})


def _shared(setup: dict[str, Any]) -> str:
    shared = setup.get("folded_shared_rows")
    return "" if shared is None else f" ({shared} of them also in the folded-basis region)"


def study_table(cells: dict[str, dict[str, Any]]) -> str:
    """Each comparison's setup line and table, in the order given."""
    tables = []
    for key, entry in cells.items():
        setup = entry["setup"]
        tables.append(f"[{key}] probe at layer {setup['layer']}: training accuracy "
                      f"{setup['probe_accuracy']:.2f}, cosine with the CAA vector "
                      f"{setup['probe_caa_cosine']:.2f}; surgery edits {setup['k']} gate rows"
                      + _shared(setup) + "; "
                      f"perplexity on {setup['perplexity_text']}; {entry['seconds']:.0f} s\n"
                      + entry["table"])
    return "\n\n".join(tables)
