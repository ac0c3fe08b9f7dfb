"""The multi-behaviour experiment's data: behaviours, their splits, what was loaded, and
each split tokenised once for scoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actsteer.data.behaviours import (
    PAPER_SPLIT_SIZES,
    BehaviourDataset,
    PaperSplits,
    load_behaviour,
)
from actsteer.data.behaviours.sources import BUILTIN_PREFIX
from actsteer.errors import MissingFileError
from actsteer.evaluation import PreparedItems, prepare_items
from actsteer.paper.common import ConfigError, digest
from actsteer.paper.multi_behaviour.config import MultiBehaviourConfig, behaviour_key
from actsteer.paths import data_dir

logger = logging.getLogger(__name__)


def load_datasets(config: MultiBehaviourConfig) -> dict[str, BehaviourDataset]:
    """Each behaviour of ``config``: a path; ``builtin:<name>`` (actsteer's own items); or
    a paper name, read from ``data_dir`` (default: the shared data folder when found), with
    a clear error when the paper's file is not there (never a silent substitute)."""
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise MissingFileError(f"data_dir={config.data_dir!r} is not a folder; pass the "
                               "folder holding the paper's behaviour files")
    found = data_dir("behaviours") if config.data_dir is None else Path(config.data_dir)
    out: dict[str, BehaviourDataset] = {}
    for spec in config.behaviours:
        key = behaviour_key(spec)
        if spec.endswith((".json", ".jsonl")) or "/" in spec:
            dataset = load_behaviour(Path(spec))
        elif spec.startswith(BUILTIN_PREFIX):
            dataset = load_behaviour(spec)
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
            "sizes (e.g. --set n_test=...)")
    return dataset.splits((n_vector, n_grid, n_test), seed=config.seed)


def items_digest(dataset: BehaviourDataset) -> str:
    return digest([f"{i.question}|{i.matching}|{i.not_matching}" for i in dataset])


def data_identity(splits: Mapping[str, PaperSplits], tax_texts: Sequence[str] | None
                  ) -> dict[str, Any]:
    """What was actually loaded: per behaviour, the source and a digest of each split's
    items; and a digest of the alignment-tax texts. Part of the results identity, because
    ``data_dir=None`` or ``tax_corpus="wikitext"`` resolve to other files (or to the
    built-ins) on another machine or working directory with the same config."""
    return {"behaviours": {b: {"source": sp.vector.source,
                               **{name: items_digest(getattr(sp, name))
                                  for name in ("vector", "grid", "test")}}
                           for b, sp in splits.items()},
            "tax_texts": None if tax_texts is None else digest(tax_texts)}


def prepare(model: Any, dataset: BehaviourDataset, fmt: str) -> PreparedItems:
    """A split tokenised once, each item prompted and scored with its own choices."""
    return prepare_items(model, dataset, fmt)  # type: ignore[arg-type]


def load_tax_texts(config: MultiBehaviourConfig) -> list[str] | None:
    """The alignment-tax documents (None when ``tax_corpus="none"``)."""
    from actsteer.data.corpora import builtin_text_corpus, text_corpus, wikitext_corpus

    if config.tax_corpus == "none":
        return None
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
