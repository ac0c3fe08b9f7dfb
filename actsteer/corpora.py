"""Document corpora for the broad-skills steering experiment.

The paper (van der Weij, Poesio, Schoots, 2024) builds steering vectors as
``mean(text activations) - mean(code activations)`` and measures next-token
top-1 accuracy on code and on text.  Its corpora are The Pile's GitHub documents
(general code), The Pile without GitHub (text) and ``codeparrot-clean``
(Python), 5,000 training documents each, with validation documents kept apart.

This module offers the same three kinds of corpora from two kinds of sources:

* offline, from files already on the machine: the interpreter's standard
  library (:func:`python_stdlib_corpus`), C/C++/CUDA headers and other sources
  shipped inside installed packages (:func:`code_corpus`), WikiText-2 or any
  ``.txt`` files (:func:`text_corpus`, :func:`wikitext_corpus`) and a small
  original English corpus bundled with the package (:func:`builtin_text_corpus`);
* online, streamed from the Hugging Face Hub (:func:`hub_corpus` and the paper
  presets :func:`pile_github_corpus`, :func:`pile_text_corpus`,
  :func:`codeparrot_corpus`), which fail fast with
  :class:`CorpusUnavailableError` when the Hub cannot be reached.

Every loader is deterministic: files are visited in sorted order and
:meth:`Corpus.split` orders documents by content hash before a seeded shuffle,
so the same files give the same train/validation split on any machine.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import random
import re
import sysconfig
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Language = str
"""A corpus language label such as ``"python"``, ``"c"``, ``"cpp"``, ``"cuda"`` or ``"text"``."""

TEXT: Language = "text"
PYTHON: Language = "python"

EXTENSION_LANGUAGE: dict[str, Language] = {
    ".py": "python",
    ".pyi": "python",
    ".pyx": "cython",
    ".pxd": "cython",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
    ".cu": "cuda",
    ".cuh": "cuda",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".lua": "lua",
    ".jl": "julia",
    ".r": "r",
    ".f90": "fortran",
    ".sh": "shell",
    ".bash": "shell",
    ".sql": "sql",
    ".swift": "swift",
}
"""File extension (lower case, with the dot) -> language label.

Kept deliberately simple: ``.h`` is always ``"c"`` even when the header is C++.
"""

C_FAMILY: frozenset[Language] = frozenset({"c", "cpp", "cuda"})

STDLIB_EXCLUDED_DIRS: frozenset[str] = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
"""Directory names pruned when walking the standard library (covers ``test``,
``*/tests``, ``idlelib/idle_test`` and ``lib2to3/tests``)."""

_ALWAYS_EXCLUDED_DIRS: frozenset[str] = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", "node_modules"}
)
_SITE_EXCLUDED_DIRS: frozenset[str] = _ALWAYS_EXCLUDED_DIRS | {"test", "tests", "testing"}

DEFAULT_CODE_GLOBS: tuple[str, ...] = ("**/*",)
"""Default glob patterns for :func:`code_corpus`; files are then kept only when
their extension is in :data:`EXTENSION_LANGUAGE`."""

DATA_DIR_ENV = "ACTSTEER_DATA_DIR"

# Hub presets used by the paper.
PILE_DATASET = "monology/pile-uncopyrighted"
"""A streamable copy of The Pile (the original ``EleutherAI/pile`` is no longer
served); its GitHub subset is intact."""
PILE_GITHUB_SET_NAME = "Github"
CODEPARROT_DATASET = "codeparrot/codeparrot-clean"
CODEPARROT_TEXT_FIELD = "content"

_HUB_PROBE_TIMEOUT_S = 5.0
_TRUTHY = frozenset({"1", "true", "yes", "on"})


class CorpusUnavailableError(RuntimeError):
    """A corpus source (the Hub, ``datasets``) cannot be used in this environment."""


# --------------------------------------------------------------------------- #
# Data model
# --------------------------------------------------------------------------- #


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
            raise ValueError(f"take(n) needs n >= 0, got {n}")
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
            raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_valid={n_valid}")
        unique = self.deduplicated()
        needed = n_train + n_valid
        if len(unique) < needed:
            raise ValueError(
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


def merge_corpora(name: str, corpora: Iterable[Corpus]) -> Corpus:
    """Concatenate several corpora, in order, under a new name."""
    return Corpus(name, tuple(doc for corpus in corpora for doc in corpus))


# --------------------------------------------------------------------------- #
# Helpers for files
# --------------------------------------------------------------------------- #


def truncate_at_line(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last line break before the limit.

    When the first line alone is longer than ``max_chars`` the text is cut
    mid-line.  ``None`` keeps the text whole.
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1] if cut > 0 else text[:max_chars]


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        logger.debug("skipping %s: not UTF-8", path)
    except OSError as exc:
        logger.debug("skipping %s: %s", path, exc)
    return None


def _check_limits(max_documents: int | None, min_chars: int, max_chars: int | None) -> None:
    if max_documents is not None and max_documents < 0:
        raise ValueError(f"max_documents must be >= 0 or None, got {max_documents}")
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    if max_chars is not None and max_chars < max(min_chars, 1):
        raise ValueError(
            f"max_chars ({max_chars}) must be None or >= min_chars ({min_chars}) and >= 1"
        )


def _walk(
    root: Path, excluded_dirs: Collection[str], suffixes: Collection[str] | None = None
) -> Iterator[Path]:
    """Files below ``root`` (optionally only those whose lower-cased suffix is in
    ``suffixes``), pruning directories named in ``excluded_dirs``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d not in excluded_dirs and not d.endswith(".dist-info")
        ]
        for filename in filenames:
            if suffixes is None or os.path.splitext(filename)[1].lower() in suffixes:
                yield Path(dirpath, filename)


def _files_under(root: Path, globs: Sequence[str], excluded_dirs: Collection[str]) -> set[Path]:
    """Files with a known extension below ``root`` matching any of ``globs``.

    Patterns are relative to ``root``; ``"**/*"`` uses a fast pruned walk.
    """
    found: set[Path] = set()
    for pattern in globs:
        if pattern in ("**/*", "**"):
            # Fast path: os.walk prunes excluded directories and only yields files.
            found.update(_walk(root, excluded_dirs, EXTENSION_LANGUAGE))
            continue
        for path in root.glob(pattern):
            rel_parts = path.relative_to(root).parts[:-1]
            if any(part in excluded_dirs for part in rel_parts):
                continue
            if language_of(path) is not None and path.is_file():
                found.add(path)
    return found


def language_of(path: str | Path) -> Language | None:
    """The language of a source file from its extension, or ``None`` when unknown."""
    return EXTENSION_LANGUAGE.get(Path(path).suffix.lower())


# --------------------------------------------------------------------------- #
# Offline code corpora
# --------------------------------------------------------------------------- #


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_python_files() -> list[Path]:
    root = _stdlib_dir()
    return sorted(
        path
        for path in _walk(root, STDLIB_EXCLUDED_DIRS, {".py"})
        if not path.name.startswith("_sysconfigdata")
    )


def _documents_from_files(
    paths: Iterable[Path],
    language: Language | None,
    *,
    min_chars: int,
    max_chars: int | None,
) -> Iterator[Document]:
    for path in paths:
        lang = language or language_of(path)
        if lang is None:
            logger.debug("skipping %s: unknown extension %r", path, path.suffix)
            continue
        text = _read_utf8(path)
        if text is None:
            continue
        text = truncate_at_line(text, max_chars)
        if len(text.strip()) < min_chars:
            continue
        yield Document(text=text, language=lang, source=str(path))


def python_stdlib_corpus(
    max_documents: int | None = None,
    *,
    min_chars: int = 200,
    max_chars: int | None = 20_000,
) -> Corpus:
    """Python source files of the running interpreter's standard library.

    Walks ``sysconfig.get_paths()["stdlib"]`` in sorted path order, skipping
    ``site-packages``, test directories (``test``, ``tests``,
    ``idlelib/idle_test``, ``lib2to3/tests``, ...), the machine-specific
    ``_sysconfigdata*`` module and files that are not UTF-8.  Each document is
    one file, truncated at a line boundary to ``max_chars`` characters; files
    shorter than ``min_chars`` (after stripping) are skipped.
    """
    _check_limits(max_documents, min_chars, max_chars)
    docs: list[Document] = []
    for doc in _documents_from_files(
        _stdlib_python_files(), PYTHON, min_chars=min_chars, max_chars=max_chars
    ):
        if max_documents is not None and len(docs) >= max_documents:
            break
        docs.append(doc)
    return Corpus("python-stdlib", tuple(docs))


def _package_dir(name: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_header_dirs() -> list[Path]:
    """Include directories of installed packages that ship C/C++/CUDA headers.

    torch's ``include/`` and numpy's ``_core/include`` (or ``core/include``);
    only those that exist are returned.
    """
    dirs: list[Path] = []
    torch_dir = _package_dir("torch")
    if torch_dir is not None:
        dirs.append(torch_dir / "include")
    numpy_dir = _package_dir("numpy")
    if numpy_dir is not None:
        dirs.extend([numpy_dir / "_core" / "include", numpy_dir / "core" / "include"])
    return [d for d in dirs if d.is_dir()]


def _site_packages_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    dirs = {Path(paths[key]) for key in ("purelib", "platlib") if key in paths}
    return sorted(d for d in dirs if d.is_dir())


def _default_code_files() -> list[Path]:
    """Candidate files of the default code corpus (sorted, de-duplicated by path)."""
    files: set[Path] = set(_stdlib_python_files())
    for header_dir in installed_header_dirs():
        files |= _files_under(header_dir, DEFAULT_CODE_GLOBS, _ALWAYS_EXCLUDED_DIRS)
    for site in _site_packages_dirs():
        # Python comes from the standard library only: site-packages .py/.pyi
        # files are mostly vendored copies and type stubs.
        files |= {
            path
            for path in _files_under(site, DEFAULT_CODE_GLOBS, _SITE_EXCLUDED_DIRS)
            if language_of(path) not in (None, PYTHON)
        }
    return sorted(files)


def code_corpus(
    roots: Sequence[str | Path] | None = None,
    globs: Sequence[str] = DEFAULT_CODE_GLOBS,
    *,
    max_documents: int | None = None,
    max_per_language: int | None = None,
    min_chars: int = 200,
    max_chars: int | None = 20_000,
) -> Corpus:
    """Source files in several programming languages found on this machine.

    With ``roots=None`` the corpus is built from the Python standard library,
    the C/C++/CUDA headers shipped by installed packages
    (:func:`installed_header_dirs`: torch's ``include/``, numpy's headers) and
    every other file in ``site-packages`` whose extension is in
    :data:`EXTENSION_LANGUAGE` except Python (``.js``, ``.pyx``, ``.cu``,
    ``.c``, ``.cpp``, ``.sh``, ...), skipping test directories.  ``globs`` is
    then ignored.

    Otherwise each root is a directory searched with ``globs`` (patterns
    relative to the root, e.g. ``"**/*.rs"``), or a single file.  Only files
    with a known extension are used; the language label comes from
    :data:`EXTENSION_LANGUAGE`.

    Documents are grouped by language (paths sorted within each language) and
    taken round-robin across languages in alphabetical order, so a small
    ``max_documents`` still covers every language; ``max_per_language`` caps
    each language so that one (usually C headers or Python) does not swamp the
    others.  Files that are not UTF-8 or are shorter than ``min_chars`` are
    skipped; long files are truncated at a line boundary to ``max_chars``.

    Raises:
        FileNotFoundError: if a given root does not exist.
    """
    _check_limits(max_documents, min_chars, max_chars)
    if max_per_language is not None and max_per_language < 0:
        raise ValueError(f"max_per_language must be >= 0 or None, got {max_per_language}")

    if roots is None:
        files = _default_code_files()
        name = "code-local"
    else:
        found: set[Path] = set()
        for root in roots:
            root_path = Path(root).expanduser()
            if not root_path.exists():
                raise FileNotFoundError(
                    f"code corpus root {str(root)!r} does not exist; pass an existing "
                    "directory or file, or roots=None for the default sources"
                )
            if root_path.is_file():
                found.add(root_path)
            else:
                found |= _files_under(root_path, globs, _ALWAYS_EXCLUDED_DIRS)
        files = sorted(found)
        name = "code:" + ",".join(str(r) for r in roots)

    by_language: dict[Language, list[Path]] = {}
    for path in files:
        lang = language_of(path)
        if lang is None:
            logger.debug("skipping %s: extension %r not in EXTENSION_LANGUAGE", path, path.suffix)
            continue
        by_language.setdefault(lang, []).append(path)

    streams = {
        lang: _documents_from_files(paths, lang, min_chars=min_chars, max_chars=max_chars)
        for lang, paths in sorted(by_language.items())
    }
    counts: Counter[Language] = Counter()
    docs: list[Document] = []
    while streams and (max_documents is None or len(docs) < max_documents):
        for lang in list(streams):
            if max_documents is not None and len(docs) >= max_documents:
                break
            if max_per_language is not None and counts[lang] >= max_per_language:
                del streams[lang]
                continue
            doc = next(streams[lang], None)
            if doc is None:
                del streams[lang]
                continue
            docs.append(doc)
            counts[lang] += 1
    corpus = Corpus(name, tuple(docs))
    logger.info("code corpus %s: %d documents, %s", name, len(corpus), corpus.languages())
    return corpus


# --------------------------------------------------------------------------- #
# Offline text corpora
# --------------------------------------------------------------------------- #

_WIKITEXT_TOP_HEADING = re.compile(r"^ ?= (?!=)(.*?\S)(?<!=) = ?$")
_WIKITEXT_SUB_HEADING = re.compile(r"^ ?(?:= ){2,}(.*?\S)(?: =){2,} ?$")
_WIKITEXT_JOIN = re.compile(r" ?@([-,.])@ ?")
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.;:!?%)\]}])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{$]) ")
_SPACE_BEFORE_CLITIC = re.compile(r" ('s|'re|'ve|'d|'ll|'m|n't|s')(?=\W|$)")
_QUOTED = re.compile(r'" ([^"\n]*?) "')


def clean_wikitext_line(line: str) -> str:
    """Undo WikiText's whitespace tokenisation in one line of body text.

    ``" @-@ "`` -> ``"-"``, ``" @,@ "`` -> ``","``, ``" @.@ "`` -> ``"."``;
    spaces before closing punctuation (``" , "`` -> ``", "``, ``" ."`` ->
    ``"."``), after opening brackets, before English clitics (``" 's"``) and
    inside double quotes are removed.  ``<unk>`` markers are left as they are.
    """
    text = _WIKITEXT_JOIN.sub(r"\1", line).strip()
    text = _QUOTED.sub(r'"\1"', text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _SPACE_AFTER_OPEN.sub(r"\1", text)
    text = _SPACE_BEFORE_CLITIC.sub(r"\1", text)
    return text


def looks_like_wikitext(text: str) -> bool:
    """Whether ``text`` is in WikiText raw format (has ``" = Title = "`` article headings)."""
    return any(_WIKITEXT_TOP_HEADING.match(line) for line in text.splitlines()[:200])


def parse_wikitext(
    raw: str,
    *,
    source: str = "wikitext",
    min_chars: int = 200,
    unk: str | None = None,
) -> list[Document]:
    """Split WikiText raw text into one document per article.

    Articles start at top-level headings (``" = Title = "``, exactly one ``=``
    on each side); sub-headings (``" = = Section = = "``) stay inside their
    article and are rendered as plain lines without the ``=`` markers.  Each
    document starts with the article title and has one paragraph per line,
    cleaned by :func:`clean_wikitext_line`.

    ``<unk>`` markers (words outside the release's vocabulary) are kept by
    default so that the text is exactly the release's; pass ``unk=""`` to drop
    them or another string to replace them.  Articles shorter than
    ``min_chars`` are dropped.  Document sources are ``"<source>:<title>"``.
    """
    docs: list[Document] = []
    title: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if title is None:
            return
        text = "\n".join([title, *lines]).strip()
        if unk is not None:
            replacement = f" {unk}" if unk else ""
            text = re.sub(r" ?<unk>", lambda _: replacement, text)
            text = "\n".join(line.strip() for line in text.split("\n")).strip()
        if len(text.strip()) >= min_chars:
            docs.append(Document(text=text, language=TEXT, source=f"{source}:{title}"))

    for raw_line in raw.splitlines():
        if not raw_line.strip():
            continue
        top = _WIKITEXT_TOP_HEADING.match(raw_line)
        if top:
            flush()
            title, lines = clean_wikitext_line(top.group(1)), []
            continue
        sub = _WIKITEXT_SUB_HEADING.match(raw_line)
        cleaned = clean_wikitext_line(sub.group(1) if sub else raw_line)
        if title is None:  # text before the first heading: an untitled article
            title = ""
        lines.append(cleaned)
    flush()
    return docs


def paragraphs_to_documents(raw: str, *, source: str, min_chars: int = 200) -> list[Document]:
    """Split plain text at blank lines, merging paragraphs into documents of ``min_chars`` or more.

    Consecutive paragraphs are joined with a blank line until the document
    reaches ``min_chars`` characters; a short remainder at the end is appended
    to the previous document (or dropped when there is none).  Sources are
    ``"<source>#<index>"``.
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in paragraphs:
        current.append(paragraph)
        if len("\n\n".join(current)) >= min_chars:
            chunks.append("\n\n".join(current))
            current = []
    if current and chunks:
        chunks[-1] = "\n\n".join([chunks[-1], *current])
    elif current and len("\n\n".join(current)) >= min_chars:
        chunks.append("\n\n".join(current))
    return [Document(text=c, language=TEXT, source=f"{source}#{i}") for i, c in enumerate(chunks)]


def _text_file_documents(path: Path, min_chars: int) -> list[Document]:
    raw = _read_utf8(path)
    if raw is None:
        return []
    if looks_like_wikitext(raw):
        return parse_wikitext(raw, source=str(path), min_chars=min_chars)
    return paragraphs_to_documents(raw, source=str(path), min_chars=min_chars)


def default_text_dir() -> Path | None:
    """Where WikiText-2 is expected: ``$ACTSTEER_DATA_DIR/wikitext-2`` when that
    variable is set, else ``../shared/data/wikitext-2`` relative to the current
    directory or to the repository holding this package, if it exists; else
    ``None``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser() / "wikitext-2"
    package_repo = Path(__file__).resolve().parents[1]
    for base in (Path.cwd(), package_repo):
        candidate = base.parent / "shared" / "data" / "wikitext-2"
        if candidate.is_dir():
            return candidate
    return None


def _missing_text_dir_error(where: Path | None) -> FileNotFoundError:
    found = f" (looked in {where})" if where is not None else ""
    return FileNotFoundError(
        f"WikiText-2 not found{found}; pass a path (data_dir=...) or set "
        f"{DATA_DIR_ENV} to a folder holding wikitext-2/{{valid,test}}.txt"
    )


WikiTextSplit = Literal["valid", "test", "both"]


def wikitext_corpus(
    data_dir: str | Path | None = None,
    split: WikiTextSplit = "both",
    *,
    max_documents: int | None = None,
    min_chars: int = 200,
    unk: str | None = None,
) -> Corpus:
    """WikiText-2 (raw) articles as a ``"text"`` corpus.

    ``data_dir`` is the folder holding ``valid.txt`` and ``test.txt`` (or the
    original ``wiki.valid.raw``/``wiki.test.raw``); by default
    :func:`default_text_dir`.  ``split`` picks ``"valid"``, ``"test"`` or
    ``"both"`` (valid then test).  See :func:`parse_wikitext` for how articles
    are split and cleaned and for ``unk``.

    Raises:
        FileNotFoundError: if the folder or a split's file is missing.
        ValueError: for an unknown ``split``.
    """
    _check_limits(max_documents, min_chars, None)
    if split not in ("valid", "test", "both"):
        raise ValueError(f"split must be 'valid', 'test' or 'both', got {split!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else default_text_dir()
    if folder is None or not folder.is_dir():
        raise _missing_text_dir_error(folder)
    docs: list[Document] = []
    for part in ("valid", "test") if split == "both" else (split,):
        candidates = [folder / f"{part}.txt", folder / f"wiki.{part}.raw"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"no WikiText-2 {part} file in {folder}: expected {part}.txt or wiki.{part}.raw"
            )
        docs.extend(
            parse_wikitext(
                path.read_text(encoding="utf-8"), source=str(path), min_chars=min_chars, unk=unk
            )
        )
    if max_documents is not None:
        docs = docs[:max_documents]
    return Corpus(f"wikitext-2:{split}", tuple(docs))


def text_corpus(
    path: str | Path | None = None,
    *,
    max_documents: int | None = None,
    min_chars: int = 200,
) -> Corpus:
    """Natural-language (``"text"``) documents from a file or a folder of ``.txt`` files.

    * A file in WikiText raw format (detected by its ``" = Title = "``
      headings) gives one document per article (:func:`parse_wikitext`).
    * Any other text file is split at blank lines, paragraphs merged until a
      document has at least ``min_chars`` characters
      (:func:`paragraphs_to_documents`).
    * A folder: every ``.txt`` file below it, in sorted path order, each
      handled as above.
    * ``None``: WikiText-2 from :func:`default_text_dir` (valid then test) if
      it is there, else the bundled English corpus
      (:func:`builtin_text_corpus`, with a warning).

    Raises:
        FileNotFoundError: if ``path`` does not exist or a folder holds no ``.txt`` file.
    """
    _check_limits(max_documents, min_chars, None)
    if path is None:
        folder = default_text_dir()
        if folder is not None and folder.is_dir():
            return wikitext_corpus(folder, "both", max_documents=max_documents, min_chars=min_chars)
        logger.warning(
            "WikiText-2 not found (set %s or pass a path); using the built-in English corpus",
            DATA_DIR_ENV,
        )
        corpus = builtin_text_corpus()
        return corpus if max_documents is None else corpus.take(max_documents)

    target = Path(path).expanduser()
    if not target.exists():
        raise FileNotFoundError(
            f"text corpus path {str(path)!r} does not exist; pass a .txt file or a folder of them"
        )
    if target.is_dir():
        files = sorted(p for p in target.rglob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"no .txt files under {str(target)!r}")
    else:
        files = [target]
    docs: list[Document] = []
    for file in files:
        docs.extend(_text_file_documents(file, min_chars))
        if max_documents is not None and len(docs) >= max_documents:
            docs = docs[:max_documents]
            break
    return Corpus(f"text:{target.name}", tuple(docs))


BUILTIN_TEXT_RESOURCE = "english_text.jsonl"


def builtin_text_corpus() -> Corpus:
    """The small original English corpus bundled with the package.

    Over 80 short explanatory and narrative documents (120-250 words each) on
    geography, history, science, cooking, sport, music, everyday life and more,
    read from ``actsteer/data/english_text.jsonl``; enough for a quick
    experiment (e.g. 40 training and 40 validation documents).  Sources are
    ``"builtin:english_text:<line index>"``.
    """
    resource = importlib.resources.files("actsteer").joinpath("data", BUILTIN_TEXT_RESOURCE)
    docs: list[Document] = []
    with resource.open("r", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            record = json.loads(line)
            docs.append(
                Document(
                    text=str(record["text"]),
                    language=TEXT,
                    source=f"builtin:english_text:{index}",
                )
            )
    return Corpus("builtin-english", tuple(docs))


# --------------------------------------------------------------------------- #
# Online corpora (Hugging Face Hub)
# --------------------------------------------------------------------------- #


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _check_hub_reachable(dataset: str) -> None:
    """Fail fast, with a one-line message, when the Hub cannot be used."""
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_flag(flag):
            raise CorpusUnavailableError(
                f"cannot stream {dataset!r}: {flag} is set; unset it with network access, "
                "or use an offline corpus (code_corpus, python_stdlib_corpus, text_corpus)"
            )
    url = f"{_hub_endpoint()}/api/datasets/{dataset}"
    try:
        with urllib.request.urlopen(url, timeout=_HUB_PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # the Hub answered (e.g. 401 for a gated set); let `datasets` decide
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CorpusUnavailableError(
            f"cannot reach the Hugging Face Hub at {_hub_endpoint()} to stream {dataset!r} "
            f"({reason}); use an offline corpus (code_corpus, python_stdlib_corpus, text_corpus)"
        ) from None


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
        raise ValueError(f"n must be >= 0, got {n}")
    _check_hub_reachable(dataset)
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


__all__ = [
    "BUILTIN_TEXT_RESOURCE",
    "CODEPARROT_DATASET",
    "C_FAMILY",
    "DATA_DIR_ENV",
    "DEFAULT_CODE_GLOBS",
    "EXTENSION_LANGUAGE",
    "PILE_DATASET",
    "PYTHON",
    "TEXT",
    "Corpus",
    "CorpusSplit",
    "CorpusUnavailableError",
    "Document",
    "Language",
    "builtin_text_corpus",
    "clean_wikitext_line",
    "code_corpus",
    "codeparrot_corpus",
    "default_text_dir",
    "hub_corpus",
    "installed_header_dirs",
    "is_pile_github",
    "is_pile_non_github",
    "language_of",
    "looks_like_wikitext",
    "merge_corpora",
    "non_python_code",
    "paragraphs_to_documents",
    "parse_wikitext",
    "pile_github_corpus",
    "pile_set_name",
    "pile_text_corpus",
    "python_stdlib_corpus",
    "text_corpus",
    "truncate_at_line",
    "wikitext_corpus",
]
