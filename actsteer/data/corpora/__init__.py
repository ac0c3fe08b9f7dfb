"""Document corpora for the broad-skills steering experiment.

The paper (van der Weij, Poesio, Schoots, 2024) builds steering vectors as
``mean(text activations) - mean(code activations)`` and measures next-token top-1
accuracy on code and on text. Its corpora are The Pile's GitHub documents (general
code), The Pile without GitHub (text) and ``codeparrot-clean`` (Python), 5,000 training
documents each, with validation documents kept apart.

* :mod:`~actsteer.data.corpora.documents`: :class:`Document`, :class:`Corpus` and its
  deterministic, deduplicated train/validation :meth:`~Corpus.split`;
* :mod:`~actsteer.data.corpora.files`: walking and reading files, :func:`language_of`;
* :mod:`~actsteer.data.corpora.code`: offline code, from the standard library
  (:func:`python_stdlib_corpus`) and installed packages (:func:`code_corpus`);
* :mod:`~actsteer.data.corpora.text`: offline text, WikiText-2 or any ``.txt`` files
  (:func:`text_corpus`, :func:`wikitext_corpus`) and a small built-in English corpus
  (:func:`builtin_text_corpus`);
* :mod:`~actsteer.data.corpora.hub`: the paper's corpora streamed from the Hub
  (:func:`pile_github_corpus`, :func:`pile_text_corpus`, :func:`codeparrot_corpus`),
  failing fast with :class:`CorpusUnavailableError` when the Hub cannot be reached.

Every loader is deterministic: files are visited in sorted order and
:meth:`Corpus.split` orders documents by content hash before a seeded shuffle, so the
same files give the same train/validation split on any machine.

Example:
    >>> split = builtin_text_corpus().split(40, 40, seed=0)
    >>> len(split.train), len(split.valid)
    (40, 40)
"""

from actsteer.data.corpora.code import (
    DEFAULT_CODE_GLOBS,
    STDLIB_EXCLUDED_DIRS,
    code_corpus,
    installed_header_dirs,
    python_stdlib_corpus,
)
from actsteer.data.corpora.documents import (
    PYTHON,
    TEXT,
    Corpus,
    CorpusSplit,
    Document,
    Language,
    non_python_code,
    truncate_at_line,
)
from actsteer.data.corpora.files import C_FAMILY, EXTENSION_LANGUAGE, language_of
from actsteer.data.corpora.hub import (
    CODEPARROT_DATASET,
    PILE_DATASET,
    CorpusUnavailableError,
    codeparrot_corpus,
    hub_corpus,
    is_pile_github,
    is_pile_non_github,
    pile_github_corpus,
    pile_set_name,
    pile_text_corpus,
)
from actsteer.data.corpora.text import (
    BUILTIN_TEXT_RESOURCE,
    WikiTextSplit,
    builtin_text_corpus,
    clean_wikitext_line,
    default_text_dir,
    looks_like_wikitext,
    paragraphs_to_documents,
    parse_wikitext,
    text_corpus,
    wikitext_corpus,
)
from actsteer.paths import DATA_DIR_ENV

__all__ = [
    "BUILTIN_TEXT_RESOURCE",
    "CODEPARROT_DATASET",
    "C_FAMILY",
    "DATA_DIR_ENV",
    "DEFAULT_CODE_GLOBS",
    "EXTENSION_LANGUAGE",
    "PILE_DATASET",
    "PYTHON",
    "STDLIB_EXCLUDED_DIRS",
    "TEXT",
    "Corpus",
    "CorpusSplit",
    "CorpusUnavailableError",
    "Document",
    "Language",
    "WikiTextSplit",
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
