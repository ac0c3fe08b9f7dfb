"""Code corpora from files already on the machine: the standard library, installed
packages' C/C++/CUDA headers and other sources, or folders the user names.

Offline stand-ins for the paper's Hub corpora: ``python_stdlib_corpus`` for
codeparrot's Python, ``code_corpus`` for The Pile's GitHub subset (general code).
"""

from __future__ import annotations

import importlib.util
import logging
import sysconfig
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from actsteer.data.corpora.documents import PYTHON, Corpus, Document, Language
from actsteer.data.corpora.files import (
    ALWAYS_EXCLUDED_DIRS,
    SITE_EXCLUDED_DIRS,
    check_limits,
    documents_from_files,
    files_under,
    language_of,
    walk_files,
)
from actsteer.errors import InvalidValueError, MissingFileError

__all__ = [
    "DEFAULT_CODE_GLOBS",
    "STDLIB_EXCLUDED_DIRS",
    "code_corpus",
    "installed_header_dirs",
    "python_stdlib_corpus",
]

logger = logging.getLogger(__name__)

STDLIB_EXCLUDED_DIRS: frozenset[str] = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
"""Directory names pruned when walking the standard library (covers ``test``,
``*/tests``, ``idlelib/idle_test`` and ``lib2to3/tests``)."""
DEFAULT_CODE_GLOBS: tuple[str, ...] = ("**/*",)
"""Default glob patterns for :func:`code_corpus`; files are then kept only when
their extension is in :data:`EXTENSION_LANGUAGE`."""

def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_python_files() -> list[Path]:
    root = _stdlib_dir()
    return sorted(
        path
        for path in walk_files(root, STDLIB_EXCLUDED_DIRS, {".py"})
        if not path.name.startswith("_sysconfigdata")
    )



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
    check_limits(max_documents, min_chars, max_chars)
    docs: list[Document] = []
    for doc in documents_from_files(
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
        files |= files_under(header_dir, DEFAULT_CODE_GLOBS, ALWAYS_EXCLUDED_DIRS)
    for site in _site_packages_dirs():
        # Python comes from the standard library only: site-packages .py/.pyi
        # files are mostly vendored copies and type stubs.
        files |= {
            path
            for path in files_under(site, DEFAULT_CODE_GLOBS, SITE_EXCLUDED_DIRS)
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
    check_limits(max_documents, min_chars, max_chars)
    if max_per_language is not None and max_per_language < 0:
        raise InvalidValueError(f"max_per_language must be >= 0 or None, got {max_per_language}")

    if roots is None:
        files = _default_code_files()
        name = "code-local"
    else:
        found: set[Path] = set()
        for root in roots:
            root_path = Path(root).expanduser()
            if not root_path.exists():
                raise MissingFileError(
                    f"code corpus root {str(root)!r} does not exist; pass an existing "
                    "directory or file, or roots=None for the default sources"
                    )
            if root_path.is_file():
                found.add(root_path)
            else:
                found |= files_under(root_path, globs, ALWAYS_EXCLUDED_DIRS)
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
        lang: documents_from_files(paths, lang, min_chars=min_chars, max_chars=max_chars)
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
