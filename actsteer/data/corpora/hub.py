"""The paper's corpora streamed from the Hugging Face Hub: The Pile and codeparrot.

Every stream first asks :func:`actsteer.hub.require_hub`, so without network (or with
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set) it fails within seconds with
:class:`CorpusUnavailableError`, pointing at the offline corpora.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from actsteer.data.corpora.documents import (
    PYTHON,
    TEXT,
    Corpus,
    Document,
    Language,
    truncate_at_line,
)
from actsteer.errors import InvalidValueError
from actsteer.hub import HubUnavailableError, require_hub

__all__ = [
    "CODEPARROT_DATASET",
    "PILE_DATASET",
    "CorpusUnavailableError",
    "codeparrot_corpus",
    "hub_corpus",
    "is_pile_github",
    "is_pile_non_github",
    "pile_github_corpus",
    "pile_set_name",
    "pile_text_corpus",
]

logger = logging.getLogger(__name__)

# Hub presets used by the paper.
PILE_DATASET = "monology/pile-uncopyrighted"
"""A streamable copy of The Pile (the original ``EleutherAI/pile`` is no longer
served); its GitHub subset is intact."""
PILE_GITHUB_SET_NAME = "Github"
CODEPARROT_DATASET = "codeparrot/codeparrot-clean"
CODEPARROT_TEXT_FIELD = "content"
HUB_TIMEOUT_S = 5.0
"""Seconds the Hub gets to answer before a stream gives up."""
_OFFLINE_INSTEAD = "use an offline corpus (code_corpus, python_stdlib_corpus, text_corpus)"


class CorpusUnavailableError(HubUnavailableError):
    """A corpus source (the Hub, ``datasets``) cannot be used in this environment."""


def hub_corpus(
    dataset: str,
    *,
    config: str | None = None,
    split: str = "train",
    text_field: str = "text",
    n: int,
    seed: int = 0,
    language: Language,
    filter_fn: Callable[[Mapping[str, Any]], bool] | None = None,
    max_chars: int | None = 20_000,
    buffer_size: int = 10_000,
) -> Corpus:
    """Stream ``n`` distinct documents of a Hugging Face dataset.

    Uses ``datasets.load_dataset(dataset, config, split=split, streaming=True)``
    shuffled with ``shuffle(seed=seed, buffer_size=buffer_size)``, keeps
    examples for which ``filter_fn(example)`` is true and whose ``text_field``
    is a non-empty string, truncates each to ``max_chars`` at a line boundary,
    skips repeats (same text up to surrounding whitespace, after truncation), and stops
    after ``n`` documents.  Sources are ``"hub:<dataset>:<index>"``
    where index counts streamed examples.

    Raises:
        CorpusUnavailableError: within seconds when ``HF_HUB_OFFLINE`` (or
            ``HF_DATASETS_OFFLINE``) is set, the Hub cannot be reached or
            ``datasets`` is not installed; also when streaming fails.
        ValueError: for ``n < 0``.
    """
    if n < 0:
        raise InvalidValueError(f"n must be >= 0, got {n}")
    require_hub(
        f"stream {dataset!r}",
        instead=_OFFLINE_INSTEAD,
        repo_type="dataset",
        timeout=HUB_TIMEOUT_S,
        error=CorpusUnavailableError,
    )
    try:
        import datasets  # slow import, only when streaming is really wanted
    except ImportError:
        raise CorpusUnavailableError(
            "streaming from the Hub needs the `datasets` package: pip install datasets"
        ) from None
    docs: list[Document] = []
    seen: set[str] = set()  # content keys: the Pile repeats files (licences, configs)
    try:
        stream = datasets.load_dataset(dataset, config, split=split, streaming=True)
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        for index, example in enumerate(stream):
            if len(docs) >= n:
                break
            if filter_fn is not None and not filter_fn(example):
                continue
            text = example.get(text_field)
            if not isinstance(text, str) or not text.strip():
                continue
            doc = Document(
                text=truncate_at_line(text, max_chars),
                language=language,
                source=f"hub:{dataset}:{index}",
            )
            if doc.content_key in seen:
                continue
            seen.add(doc.content_key)
            docs.append(doc)
    except CorpusUnavailableError:
        raise
    except Exception as exc:  # `datasets` raises many unrelated exception types
        raise CorpusUnavailableError(
            f"streaming {dataset!r} (config={config!r}, split={split!r}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(docs) < n:
        logger.warning("%s gave only %d of the %d requested documents", dataset, len(docs), n)
    name = f"hub:{dataset}" + (f":{config}" if config else "") + f":{split}"
    return Corpus(name, tuple(docs))


def pile_set_name(example: Mapping[str, Any]) -> str | None:
    """The Pile subset of an example (``meta["pile_set_name"]``; meta may be a JSON string)."""
    meta = example.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return None
    if isinstance(meta, Mapping):
        value = meta.get("pile_set_name")
        return value if isinstance(value, str) else None
    return None


def is_pile_github(example: Mapping[str, Any]) -> bool:
    """Whether a Pile example comes from its GitHub subset."""
    return pile_set_name(example) == PILE_GITHUB_SET_NAME


def is_pile_non_github(example: Mapping[str, Any]) -> bool:
    """Whether a Pile example comes from any subset but GitHub."""
    name = pile_set_name(example)
    return name is not None and name != PILE_GITHUB_SET_NAME


def pile_github_corpus(
    n: int = 5_000, *, seed: int = 0, dataset: str = PILE_DATASET, split: str = "train"
) -> Corpus:
    """The paper's general-code corpus: The Pile's GitHub documents (language ``"code"``)."""
    return hub_corpus(
        dataset, split=split, n=n, seed=seed, language="code", filter_fn=is_pile_github
    )


def pile_text_corpus(
    n: int = 5_000, *, seed: int = 0, dataset: str = PILE_DATASET, split: str = "train"
) -> Corpus:
    """The paper's text corpus: The Pile without its GitHub subset (language ``"text"``)."""
    return hub_corpus(
        dataset, split=split, n=n, seed=seed, language=TEXT, filter_fn=is_pile_non_github
    )


def codeparrot_corpus(
    n: int = 5_000, *, seed: int = 0, dataset: str = CODEPARROT_DATASET, split: str = "train"
) -> Corpus:
    """The paper's Python corpus: ``codeparrot/codeparrot-clean`` (field ``"content"``).

    Its held-out counterpart is published separately as
    ``codeparrot/codeparrot-clean-valid``.
    """
    return hub_corpus(
        dataset,
        split=split,
        text_field=CODEPARROT_TEXT_FIELD,
        n=n,
        seed=seed,
        language=PYTHON,
    )
