"""Reading source and text files: languages by extension, pruned walks, UTF-8 only.

Shared by the code and text corpora: files are visited in sorted order, directories such
as ``.git`` or ``__pycache__`` are pruned, and unreadable or non-UTF-8 files are skipped
(logged at debug level), so a corpus never fails on one odd file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

from actsteer.data.corpora.documents import Document, Language, truncate_at_line
from actsteer.errors import InvalidValueError

__all__ = [
    "ALWAYS_EXCLUDED_DIRS",
    "C_FAMILY",
    "EXTENSION_LANGUAGE",
    "SITE_EXCLUDED_DIRS",
    "check_limits",
    "documents_from_files",
    "files_under",
    "language_of",
    "read_utf8",
    "walk_files",
]

logger = logging.getLogger(__name__)

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
"""The C-like languages (their headers are the bulk of the default code corpus)."""

ALWAYS_EXCLUDED_DIRS: frozenset[str] = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", "node_modules"}
)
"""Directory names never walked into (version control, caches, JavaScript packages)."""
SITE_EXCLUDED_DIRS: frozenset[str] = ALWAYS_EXCLUDED_DIRS | {"test", "tests", "testing"}
"""Also pruned in ``site-packages``: test folders are mostly fixtures and generated code."""


def language_of(path: str | Path) -> Language | None:
    """The language of a source file from its extension, or ``None`` when unknown."""
    return EXTENSION_LANGUAGE.get(Path(path).suffix.lower())


def read_utf8(path: Path) -> str | None:
    """The file's text, or ``None`` (logged at debug level) if it is not UTF-8 or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        logger.debug("skipping %s: not UTF-8", path)
    except OSError as exc:
        logger.debug("skipping %s: %s", path, exc)
    return None


def check_limits(max_documents: int | None, min_chars: int, max_chars: int | None) -> None:
    """``ValueError`` naming the bad value when a corpus loader's size limits are invalid."""
    if max_documents is not None and max_documents < 0:
        raise InvalidValueError(f"max_documents must be >= 0 or None, got {max_documents}")
    if min_chars < 0:
        raise InvalidValueError(f"min_chars must be >= 0, got {min_chars}")
    if max_chars is not None and max_chars < max(min_chars, 1):
        raise InvalidValueError(
            f"max_chars ({max_chars}) must be None or >= min_chars ({min_chars}) and >= 1"
            )


def walk_files(
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


def files_under(root: Path, globs: Sequence[str], excluded_dirs: Collection[str]) -> set[Path]:
    """Files with a known extension below ``root`` matching any of ``globs``.

    Patterns are relative to ``root``; ``"**/*"`` uses a fast pruned walk.
    """
    found: set[Path] = set()
    for pattern in globs:
        if pattern in ("**/*", "**"):
            # Fast path: os.walk prunes excluded directories and only yields files.
            found.update(walk_files(root, excluded_dirs, EXTENSION_LANGUAGE))
            continue
        for path in root.glob(pattern):
            rel_parts = path.relative_to(root).parts[:-1]
            if any(part in excluded_dirs for part in rel_parts):
                continue
            if language_of(path) is not None and path.is_file():
                found.add(path)
    return found


def documents_from_files(
    paths: Iterable[Path],
    language: Language | None,
    *,
    min_chars: int,
    max_chars: int | None,
) -> Iterator[Document]:
    """One document per readable file, in the given order: labelled ``language`` (or by
    extension when ``None``), truncated to ``max_chars`` at a line break, and skipped when
    shorter than ``min_chars`` after stripping."""
    for path in paths:
        lang = language or language_of(path)
        if lang is None:
            logger.debug("skipping %s: unknown extension %r", path, path.suffix)
            continue
        text = read_utf8(path)
        if text is None:
            continue
        text = truncate_at_line(text, max_chars)
        if len(text.strip()) < min_chars:
            continue
        yield Document(text=text, language=lang, source=str(path))
