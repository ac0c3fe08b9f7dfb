"""Natural-language corpora: WikiText-2, any ``.txt`` files, and a small built-in set.

Offline stand-ins for the paper's text corpus (The Pile without GitHub). WikiText-2 is
found with :func:`actsteer.paths.data_dir` (``$ACTSTEER_DATA_DIR/wikitext-2`` or
``shared/data/wikitext-2`` beside the repository); the built-in English corpus ships with
the package.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Literal

from actsteer import paths
from actsteer.data import read_builtin
from actsteer.data.corpora.documents import TEXT, Corpus, Document
from actsteer.data.corpora.files import check_limits, read_utf8
from actsteer.errors import InvalidValueError, MissingFileError
from actsteer.paths import DATA_DIR_ENV

__all__ = [
    "BUILTIN_TEXT_RESOURCE",
    "WIKITEXT_SUBDIR",
    "WikiTextSplit",
    "builtin_text_corpus",
    "clean_wikitext_line",
    "default_text_dir",
    "looks_like_wikitext",
    "paragraphs_to_documents",
    "parse_wikitext",
    "text_corpus",
    "wikitext_corpus",
]

logger = logging.getLogger(__name__)

WIKITEXT_SUBDIR = "wikitext-2"
"""WikiText-2 lives in ``data_dir("wikitext-2")``."""

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
    raw = read_utf8(path)
    if raw is None:
        return []
    if looks_like_wikitext(raw):
        return parse_wikitext(raw, source=str(path), min_chars=min_chars)
    return paragraphs_to_documents(raw, source=str(path), min_chars=min_chars)


def default_text_dir() -> Path | None:
    """Where WikiText-2 is, or ``None``: ``actsteer.paths.data_dir("wikitext-2")``, i.e.
    ``$ACTSTEER_DATA_DIR/wikitext-2`` when that variable is set, else the first
    ``shared/data/wikitext-2`` found from the current folder or the package upwards."""
    return paths.data_dir(WIKITEXT_SUBDIR)


def _missing_text_dir_error(where: Path | None) -> FileNotFoundError:
    if where is not None:
        looked = f"{where} is not a folder"
    elif os.environ.get(DATA_DIR_ENV):
        looked = f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]} has no {WIKITEXT_SUBDIR} folder"
    else:
        looked = f"no shared/data/{WIKITEXT_SUBDIR} above the current folder or the package"
    return FileNotFoundError(
        f"WikiText-2 not found ({looked}); pass a path (data_dir=...) or set "
        f"{DATA_DIR_ENV} to a folder holding {WIKITEXT_SUBDIR}/{{valid,test}}.txt"
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
    check_limits(max_documents, min_chars, None)
    if split not in ("valid", "test", "both"):
        raise InvalidValueError(f"split must be 'valid', 'test' or 'both', got {split!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else default_text_dir()
    if folder is None or not folder.is_dir():
        raise _missing_text_dir_error(folder)
    docs: list[Document] = []
    for part in ("valid", "test") if split == "both" else (split,):
        candidates = [folder / f"{part}.txt", folder / f"wiki.{part}.raw"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise MissingFileError(
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
    check_limits(max_documents, min_chars, None)
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
        raise MissingFileError(
            f"text corpus path {str(path)!r} does not exist; pass a .txt file or a folder of them"
            )
    if target.is_dir():
        files = sorted(p for p in target.rglob("*.txt") if p.is_file())
        if not files:
            raise MissingFileError(f"no .txt files under {str(target)!r}")
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
    read from ``actsteer/data/builtin/english_text.jsonl``; enough for a quick
    experiment (e.g. 40 training and 40 validation documents).  Sources are
    ``"builtin:english_text:<line index>"``.
    """
    docs: list[Document] = []
    for index, line in enumerate(read_builtin(BUILTIN_TEXT_RESOURCE).split("\n")):
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
