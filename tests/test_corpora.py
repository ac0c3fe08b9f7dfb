"""Tests for actsteer.data.corpora (offline sources, splits, WikiText parsing, Hub fail-fast)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from actsteer.data import corpora, read_builtin
from actsteer.data.corpora import (
    C_FAMILY,
    EXTENSION_LANGUAGE,
    Corpus,
    CorpusUnavailableError,
    Document,
    builtin_text_corpus,
    code_corpus,
    hub_corpus,
    python_stdlib_corpus,
    text_corpus,
    wikitext_corpus,
)
from actsteer.data.corpora import code as code_sources
from actsteer.data.corpora import hub as hub_sources
from actsteer.hub import HubUnavailableError

SHARED_WIKITEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"


def _corpus(texts: list[str], language: str = "text") -> Corpus:
    return Corpus("t", tuple(Document(t, language, f"mem:{i}") for i, t in enumerate(texts)))


# --------------------------------------------------------------------------- #
# Document / Corpus basics
# --------------------------------------------------------------------------- #


def test_doc_id_is_content_hash() -> None:
    a = Document("hello world", "text", "x")
    b = Document("hello world", "python", "y")
    c = Document("hello world!", "text", "x")
    assert a.doc_id == b.doc_id == "2aae6c35c94fcfb4"  # sha1("hello world")[:16]
    assert a.doc_id != c.doc_id


def test_filter_dedup_take() -> None:
    corpus = Corpus(
        "m",
        (
            Document("a = 1\n", "python", "1"),
            Document("int a;\n", "c", "2"),
            Document("  a = 1\n ", "python", "3"),
            Document("fn a() {}\n", "rust", "4"),
        ),
    )
    assert corpus.languages() == {"python": 2, "c": 1, "rust": 1}
    assert [d.source for d in corpus.filter(language="python")] == ["1", "3"]
    assert [d.source for d in corpus.filter(exclude_language="python")] == ["2", "4"]
    assert [d.source for d in corpus.filter(language=["c", "rust"])] == ["2", "4"]
    assert [d.source for d in corpus.deduplicated()] == ["1", "2", "4"]
    assert corpus.take(2).texts() == ["a = 1\n", "int a;\n"]
    with pytest.raises(ValueError, match="-1"):
        corpus.take(-1)


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #


def test_split_deterministic_disjoint_exact_sizes() -> None:
    corpus = _corpus([f"document number {i}" for i in range(50)])
    first = corpus.split(20, 10, seed=3)
    second = corpus.split(20, 10, seed=3)
    assert first == second
    assert len(first.train) == 20 and len(first.valid) == 10
    train_ids = {d.doc_id for d in first.train}
    valid_ids = {d.doc_id for d in first.valid}
    assert len(train_ids) == 20 and len(valid_ids) == 10
    assert not train_ids & valid_ids
    # Independent of input order, dependent on seed.
    reversed_corpus = Corpus("r", tuple(reversed(corpus.documents)))
    assert reversed_corpus.split(20, 10, seed=3).train.texts() == first.train.texts()
    assert corpus.split(20, 10, seed=4).train.texts() != first.train.texts()


def test_split_duplicates_never_straddle() -> None:
    base = [f"text {i}" for i in range(30)]
    # Every text three times, once with surrounding whitespace.
    corpus = _corpus(base + base + [f"  {t}\n" for t in base])
    for seed in range(5):
        split = corpus.split(15, 15, seed=seed)
        train = {d.text.strip() for d in split.train}
        valid = {d.text.strip() for d in split.valid}
        assert len(train) == 15 and len(valid) == 15
        assert not train & valid


def test_split_too_small_names_numbers() -> None:
    corpus = _corpus(["same"] * 10 + ["other"])
    with pytest.raises(ValueError, match=r"2 distinct documents.*11 before.*5 \+ 5 = 10"):
        corpus.split(5, 5)
    with pytest.raises(ValueError, match="n_train=-1"):
        corpus.split(-1, 1)


# --------------------------------------------------------------------------- #
# Python standard library
# --------------------------------------------------------------------------- #


def test_stdlib_corpus() -> None:
    first = python_stdlib_corpus(max_documents=40, max_chars=2_000)
    second = python_stdlib_corpus(max_documents=40, max_chars=2_000)
    assert first == second
    assert len(first) == 40
    assert set(first.languages()) == {"python"}
    for doc in first:
        parts = Path(doc.source).parts
        assert doc.source.endswith(".py")
        assert "site-packages" not in parts
        assert not {"test", "tests", "idle_test"} & set(parts)
        assert 200 <= len(doc.text) <= 2_000


def test_stdlib_full_walk_excludes_tests() -> None:
    sources = [Path(p) for p in map(str, code_sources._stdlib_python_files())]
    assert len(sources) > 300
    assert sources == sorted(sources)
    assert not any({"test", "tests", "idle_test", "site-packages"} & set(p.parts) for p in sources)


# --------------------------------------------------------------------------- #
# Code corpus
# --------------------------------------------------------------------------- #


def test_code_corpus_default_languages() -> None:
    if not corpora.installed_header_dirs():
        pytest.skip("no torch/numpy header directory installed: no C/C++ sources to find")
    corpus = code_corpus(max_documents=60, max_chars=4_000)
    langs = corpus.languages()
    assert len(langs) >= 2
    assert "python" in langs
    assert C_FAMILY & set(langs)
    for doc in corpus:
        assert EXTENSION_LANGUAGE[Path(doc.source).suffix.lower()] == doc.language
    assert code_corpus(max_documents=60, max_chars=4_000) == corpus


def test_code_corpus_per_language_cap() -> None:
    if not corpora.installed_header_dirs():
        pytest.skip("no torch/numpy header directory installed: no C/C++ sources to find")
    corpus = code_corpus(max_documents=80, max_per_language=5, max_chars=2_000)
    assert max(corpus.languages().values()) <= 5


def test_code_corpus_user_root_and_globs(tmp_path: Path) -> None:
    body = "\n".join(f"// line {i} with some source-like content" for i in range(20)) + "\n"
    (tmp_path / "a.rs").write_text("fn main() {}\n" + body)
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "b.go").write_text("package main\n" + body)
    (tmp_path / "c.py").write_text("x = 1\n" + body.replace("//", "#"))
    (tmp_path / "notes.md").write_text("# notes\n" + body)
    (tmp_path / "short.c").write_text("int x;\n")  # below min_chars
    (tmp_path / "latin1.h").write_bytes(b"/* \xe9\xe8 */\n" + body.encode() * 2)  # not UTF-8

    corpus = code_corpus([tmp_path])
    assert sorted(corpus.languages()) == ["go", "python", "rust"]
    by_name = {Path(d.source).name: d.language for d in corpus}
    assert by_name == {"a.rs": "rust", "b.go": "go", "c.py": "python"}

    only_top = code_corpus([str(tmp_path)], globs=["*.rs", "*.py"])
    assert sorted(only_top.languages()) == ["python", "rust"]


def test_code_corpus_truncates_at_line_boundary(tmp_path: Path) -> None:
    (tmp_path / "long.c").write_text("".join(f"int v{i} = {i};\n" for i in range(2_000)))
    (doc,) = code_corpus([tmp_path], max_chars=500).documents
    assert len(doc.text) <= 500
    assert doc.text.endswith(";\n")


def test_code_corpus_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        code_corpus([tmp_path, missing])


# --------------------------------------------------------------------------- #
# WikiText and plain text
# --------------------------------------------------------------------------- #

_SYNTHETIC_LINES = [
    "",
    "= First Article =",
    "",
    "The river is 1 @,@ 200 km long , and it flows north @-@ east . "
    "It carries 2 @.@ 5 tonnes of <unk> each year .",
    "",
    "= = History = =",
    "",
    "Settlers arrived in the 1850s ( mostly farmers ) and built the town 's first bridge .",
    "",
    "= = = Later years = = =",
    "",
    "The bridge was rebuilt twice ; the second time after a flood .",
    "",
    "= Second Article =",
    "",
    "The Second Article describes a small bird that lives in the hills and sings at dawn , "
    "often for hours .",
    "",
    "= = Description = =",
    "",
    "Its feathers are brown , and it eats seeds , insects and berries .",
]
# The release's layout: every line has one leading and one trailing space.
_SYNTHETIC_WIKITEXT = "".join(f" {line} \n" for line in _SYNTHETIC_LINES)


def test_wikitext_splits_at_top_level_headings(tmp_path: Path) -> None:
    path = tmp_path / "valid.txt"
    path.write_text(_SYNTHETIC_WIKITEXT)
    corpus = text_corpus(path, min_chars=50)
    assert len(corpus) == 2
    first, second = corpus.documents
    assert first.text.startswith("First Article\n")
    assert second.text.startswith("Second Article\n")
    assert "History" in first.text and "Later years" in first.text
    assert "Description" in second.text
    assert "1,200 km long, and it flows north-east." in first.text
    assert "2.5 tonnes" in first.text
    assert "(mostly farmers)" in first.text and "town's" in first.text
    for doc in corpus:
        assert doc.language == "text"
        assert "@" not in doc.text and " ," not in doc.text and " ." not in doc.text
        assert "=" not in doc.text
    assert "<unk>" in first.text  # kept by default

    same = wikitext_corpus(tmp_path, "valid", min_chars=50)
    assert same.texts() == corpus.texts()
    dropped = wikitext_corpus(tmp_path, "valid", min_chars=50, unk="")
    assert "<unk>" not in dropped.texts()[0] and "2.5 tonnes of each year" in dropped.texts()[0]


def test_wikitext_missing_dir_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path))
    # One data-folder rule (actsteer.paths.data_dir): an absent folder is None.
    assert corpora.default_text_dir() is None
    with pytest.raises(FileNotFoundError, match=f"ACTSTEER_DATA_DIR={tmp_path} has no"):
        wikitext_corpus()
    (tmp_path / "wikitext-2").mkdir()
    assert corpora.default_text_dir() == tmp_path / "wikitext-2"
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        wikitext_corpus(split="test")
    with pytest.raises(ValueError, match="'train'"):
        wikitext_corpus(tmp_path / "wikitext-2", "train")  # type: ignore[arg-type]


def test_shared_wikitext() -> None:
    if not (SHARED_WIKITEXT / "valid.txt").is_file():
        pytest.skip(f"shared WikiText-2 not found at {SHARED_WIKITEXT}")
    corpus = wikitext_corpus(SHARED_WIKITEXT, "both")
    assert len(corpus) > 50
    assert len({d.doc_id for d in corpus}) == len(corpus)
    for doc in corpus:
        assert " @-@ " not in doc.text and " @,@ " not in doc.text and " @.@ " not in doc.text
        assert not doc.text.startswith("=")
    split = corpus.split(40, 40)
    assert not {d.doc_id for d in split.train} & {d.doc_id for d in split.valid}


def test_plain_text_paragraph_merging(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 15 for i in range(10)]  # ~90 chars each
    (tmp_path / "b.txt").write_text("\n\n".join(paragraphs))
    (tmp_path / "a.txt").write_text("Short one.\n\n" + "Another " * 40)
    (tmp_path / "ignored.md").write_text("not text corpus " * 50)
    corpus = text_corpus(tmp_path, min_chars=200)
    assert [Path(d.source.split("#")[0]).name for d in corpus] == ["a.txt"] + ["b.txt"] * 3
    assert all(len(d.text) >= 200 for d in corpus)
    # No paragraph is lost: the short tail is appended to the last document.
    joined = "\n\n".join(corpus.texts()[1:])
    assert all(p.strip() in joined for p in paragraphs)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        text_corpus(tmp_path / "nowhere")


# --------------------------------------------------------------------------- #
# Built-in English corpus
# --------------------------------------------------------------------------- #


def test_builtin_text_corpus() -> None:
    corpus = builtin_text_corpus()
    lines = read_builtin("english_text.jsonl").split("\n")
    assert corpus.documents[0].text == json.loads(lines[0])["text"]
    assert len(corpus) == sum(1 for line in lines if line.strip())
    assert len(corpus) >= 80
    assert len(set(corpus.texts())) == len(corpus)
    for doc in corpus:
        assert 120 <= len(doc.text.split()) <= 250, doc.source
        assert doc.language == "text"
        assert doc.source.startswith("builtin:english_text:")
        assert not any(ch in doc.text for ch in "{}<>=_\\#")
    split = corpus.split(40, 40)
    assert len(split.train) == len(split.valid) == 40


# --------------------------------------------------------------------------- #
# Hub
# --------------------------------------------------------------------------- #


def test_hub_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CorpusUnavailableError, match="HF_HUB_OFFLINE") as info:
        hub_corpus("codeparrot/codeparrot-clean", text_field="content", n=5, language="python")
    assert time.monotonic() - start < 2.0
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert isinstance(info.value, HubUnavailableError)
    # HF_DATASETS_OFFLINE alone also counts for dataset streams.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusUnavailableError, match="HF_DATASETS_OFFLINE"):
        corpora.codeparrot_corpus(2)


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    start = time.monotonic()
    with pytest.raises(CorpusUnavailableError, match="cannot reach"):
        corpora.pile_github_corpus(3)
    assert time.monotonic() - start < 10.0


def test_pile_filters() -> None:
    github = {"text": "x", "meta": {"pile_set_name": "Github"}}
    wiki = {"text": "y", "meta": '{"pile_set_name": "Wikipedia (en)"}'}
    assert corpora.is_pile_github(github) and not corpora.is_pile_non_github(github)
    assert corpora.is_pile_non_github(wiki) and not corpora.is_pile_github(wiki)
    assert not corpora.is_pile_non_github({"text": "z"})


def test_whitespace_variants_are_one_document_for_dedup() -> None:
    a = Document("def f():\n    return 1", "python", "x")
    b = Document("def f():\n    return 1\n", "python", "y")
    assert a.doc_id != b.doc_id and a.content_key == b.content_key
    assert len(Corpus("c", (a, b)).deduplicated()) == 1


def test_hub_stream_skips_repeated_documents(monkeypatch) -> None:
    import datasets

    rows = [{"text": "MIT License\n"}, {"text": "print(1)"}, {"text": "MIT License"},
            {"text": ""}, {"text": "print(2)"}, {"text": "print(3)"}]

    class Stream:
        def shuffle(self, seed, buffer_size):
            return iter(rows)

    monkeypatch.setattr(hub_sources, "require_hub", lambda *args, **kwargs: "http://hub")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Stream())
    corpus = hub_corpus("some/dataset", n=3, language="python")
    assert corpus.texts() == ["MIT License\n", "print(1)", "print(2)"]
    assert [d.source for d in corpus] == ["hub:some/dataset:0", "hub:some/dataset:1",
                                          "hub:some/dataset:4"]
