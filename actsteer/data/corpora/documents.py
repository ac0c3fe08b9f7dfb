"""Documents and corpora as values: languages, deduplication and reproducible splits.

A :class:`Corpus` is an ordered, immutable tuple of :class:`Document`; every operation
returns a new corpus. :meth:`Corpus.split` depends only on the documents' texts and a
seed, so the same files give the same train/validation split on any machine.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from actsteer.errors import InvalidValueError

__all__ = [
    "PYTHON",
    "TEXT",
    "Corpus",
    "CorpusSplit",
    "Document",
    "Language",
    "non_python_code",
    "truncate_at_line",
]

Language = str
"""A corpus language label such as ``"python"``, ``"c"``, ``"cpp"``, ``"cuda"`` or ``"text"``."""

TEXT: Language = "text"
PYTHON: Language = "python"


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    Attributes:
        text: The document's text.
        language: Its language label (``"python"``, ``"cpp"``, ``"text"``, ...).
        source: Where it came from: a file path, ``"builtin:english_text:17"``
            or ``"hub:<dataset>:<index>"``.
    """

    text: str
    language: Language
    source: str

    @property
    def doc_id(self) -> str:
        """Stable content hash: the first 16 hex digits of the SHA-1 of ``text``."""
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()[:16]

    @property
    def content_key(self) -> str:
        """What counts as "the same document" for deduplication and hold-outs: the hash
        of the text without surrounding whitespace (``doc_id`` hashes the exact text)."""
        return hashlib.sha1(self.text.strip().encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Corpus:
    """An ordered, immutable collection of :class:`Document` objects."""

    name: str
    documents: tuple[Document, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.documents, tuple):
            object.__setattr__(self, "documents", tuple(self.documents))

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def languages(self) -> dict[Language, int]:
        """Number of documents per language, most common first."""
        return dict(Counter(doc.language for doc in self.documents).most_common())

    def texts(self) -> list[str]:
        """The documents' texts, in order."""
        return [doc.text for doc in self.documents]

    def take(self, n: int) -> Corpus:
        """The first ``n`` documents (all of them when ``n >= len(self)``)."""
        if n < 0:
            raise InvalidValueError(f"take(n) needs n >= 0, got {n}")
        return Corpus(self.name, self.documents[:n])

    def filter(
        self,
        language: Language | Collection[Language] | None = None,
        exclude_language: Language | Collection[Language] | None = None,
    ) -> Corpus:
        """Keep documents whose language is in ``language`` and not in ``exclude_language``.

        Each argument is a single label or a collection of labels; ``None``
        means no constraint.
        """
        keep = _as_label_set(language)
        drop = _as_label_set(exclude_language) or frozenset()
        docs = tuple(
            d
            for d in self.documents
            if (keep is None or d.language in keep) and d.language not in drop
        )
        parts = []
        if keep is not None:
            parts.append("language=" + ",".join(sorted(keep)))
        if drop:
            parts.append("exclude=" + ",".join(sorted(drop)))
        name = f"{self.name}[{';'.join(parts)}]" if parts else self.name
        return Corpus(name, docs)

    def deduplicated(self) -> Corpus:
        """Drop documents whose stripped text repeats an earlier one (order preserved)."""
        seen: set[str] = set()
        docs: list[Document] = []
        for doc in self.documents:
            key = doc.content_key
            if key in seen:
                continue
            seen.add(key)
            docs.append(doc)
        return Corpus(self.name, tuple(docs))

    def split(self, n_train: int, n_valid: int, *, seed: int = 0) -> CorpusSplit:
        """Deterministically split into disjoint train and validation corpora.

        The corpus is deduplicated first (so two copies of a text cannot land
        on both sides), ordered by :attr:`Document.doc_id` and shuffled with
        ``random.Random(seed)``; the first ``n_train`` documents are the
        training set and the next ``n_valid`` the validation set.  The result
        depends only on the documents' texts and ``seed``, not on their order
        or on the machine.

        Raises:
            ValueError: if a size is negative or the deduplicated corpus has
                fewer than ``n_train + n_valid`` documents.
        """
        if n_train < 0 or n_valid < 0:
            raise InvalidValueError(
                f"split sizes must be >= 0, got n_train={n_train}, n_valid={n_valid}")
        unique = self.deduplicated()
        needed = n_train + n_valid
        if len(unique) < needed:
            raise InvalidValueError(
                                    f"corpus {self.name!r} has {len(unique)} distinct documents "
                                    f"({len(self)} before deduplication) but the split needs "
                                    f"n_train + n_valid = {n_train} + {n_valid} = {needed}; "
                                    "ask for fewer documents or load a larger corpus"
                                    )
        ordered = sorted(unique.documents, key=lambda d: d.doc_id)
        random.Random(seed).shuffle(ordered)
        return CorpusSplit(
            train=Corpus(f"{self.name}/train", tuple(ordered[:n_train])),
            valid=Corpus(f"{self.name}/valid", tuple(ordered[n_train:needed])),
        )


@dataclass(frozen=True)
class CorpusSplit:
    """Disjoint training and validation corpora (see :meth:`Corpus.split`)."""

    train: Corpus
    valid: Corpus


def _as_label_set(labels: Language | Collection[Language] | None) -> frozenset[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        return frozenset({labels})
    return frozenset(labels)


def non_python_code(corpus: Corpus) -> Corpus:
    """The documents of ``corpus`` that are not Python (general code without Python)."""
    return corpus.filter(exclude_language=PYTHON)


def truncate_at_line(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last line break before the limit.

    When the first line alone is longer than ``max_chars`` the text is cut
    mid-line.  ``None`` keeps the text whole.
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1] if cut > 0 else text[:max_chars]
