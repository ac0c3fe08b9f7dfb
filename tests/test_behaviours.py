"""Tests for actsteer.data.behaviours: formats, normalisation, the paper's splits, built-ins,
contrastive pairs."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import TypeVar

import pytest

from actsteer.data import BUILTIN_FILES, read_builtin
from actsteer.data.behaviours import (
    PAPER_BEHAVIOURS,
    PAPER_FILES,
    BehaviourDataset,
    BehaviourItem,
    DatasetFormatError,
    DatasetUnavailableError,
    PaperSplits,
    canonical_name,
    default_data_dir,
    listed_choices,
    load_anthropic_jsonl,
    load_behaviour,
    load_builtin,
    load_from_hub,
    load_paper_json,
    parse_paper_prompt,
    render_paper_prompt,
)
from actsteer.extraction import ContrastivePair
from actsteer.hub import HubUnavailableError
from actsteer.paths import data_dir as find_data_dir
from actsteer.paths import env_flag
from actsteer.prompts import answer_stem, paper_prompt

EXPECTED_KIND = {
    "myopia": "AB",
    "wealth_seeking": "AB",
    "sycophancy": "AB",
    "agreeableness": "YesNo",
    "anti_immigration": "YesNo",
}
T = TypeVar("T")
HUB_FILE = "advanced-ai-risk/lm_generated_evals/myopic-reward.jsonl"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    found = default_data_dir()
    if found is None:
        pytest.skip(
            "shared behaviour data not found at $ACTSTEER_DATA_DIR/behaviours or "
            "../shared/data/behaviours; set ACTSTEER_DATA_DIR"
        )
    return found


def _paper_shuffle(raw: list[T]) -> list[T]:
    """The paper's own code: seed the global RNG and shuffle the loaded list in place."""
    state = random.getstate()
    try:
        random.seed(13)
        random.shuffle(raw)
    finally:
        random.setstate(state)
    return raw


def _row(question: str, matching: object, not_matching: object) -> str:
    return json.dumps(
        {
            "question": question,
            "answer_matching_behavior": matching,
            "answer_not_matching_behavior": not_matching,
        }
    )


def _ab_question(i: int) -> str:
    return f"Question number {i}?\n\nChoices:\n (A) yes {i}\n (B) no {i}"


# --------------------------------------------------------------------------- shuffling


def test_local_random_gives_same_permutation_as_seeding_global() -> None:
    data = [f"item {i}" for i in range(1000)]
    expected = _paper_shuffle(list(data))
    local = list(data)
    random.Random(13).shuffle(local)
    assert local == expected
    assert local != data


def test_shuffled_leaves_global_random_state_alone() -> None:
    ds = load_builtin("myopia")
    state = random.getstate()
    once = ds.shuffled()
    assert random.getstate() == state
    assert once.questions == ds.shuffled(13).questions
    assert once.questions != ds.shuffled(14).questions
    assert sorted(once.questions) == sorted(ds.questions)


# --------------------------------------------------------------------------- paper files


def _old_paper_prompt(question: str, kind: str) -> str:
    """How the paper's prompt was rendered before items carried their choices (commit
    83eb8e5, actsteer/behaviours.py): the two labels of the kind, nothing else."""
    first, second = {"AB": ("A", "B"), "YesNo": ("Yes", "No")}[kind]
    return f"Human:\n{question}\n\nAI:\nOut of ({first}) and ({second}), I choose ("


@pytest.mark.parametrize("name", PAPER_BEHAVIOURS)
def test_paper_file_loads_with_right_kind_and_round_trips(
    data_dir: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="actsteer.data.behaviours"):
        ds = load_behaviour(name, data_dir=data_dir)
    assert "unbalanced" not in caplog.text and "more than two choices" not in caplog.text
    raw = json.loads((data_dir / PAPER_FILES[name]).read_text(encoding="utf-8"))
    assert ds.name == name
    assert len(ds) == len(raw) >= 985
    assert ds.kind == EXPECTED_KIND[name]
    assert ds.labels == {"AB": ("A", "B"), "YesNo": ("Yes", "No")}[ds.kind]
    # Every prompt is byte for byte the file's, and what the code rendered before.
    assert [p.prompt for p in ds.pairs()] == [row["question"] for row in raw]
    assert [_old_paper_prompt(it.question, ds.kind) for it in ds] == [r["question"] for r in raw]
    for item, row in zip(ds, raw, strict=True):
        assert item.choices == ds.labels
        assert item.raw_prompt == row["question"]
        assert not item.question.startswith("Human:")
        assert "\n\nAI:\n" not in item.question
        assert item.question == item.question.strip()
        # Re-wrapping the bare question in the paper template gives the original back.
        assert render_paper_prompt(item.question, item.kind) == row["question"]
        assert item.paper_prompt() == row["question"]
        assert item.matching == row["answer_matching_behavior"]
        assert item.not_matching == row["answer_not_matching_behavior"]
    pairs = ds[:20].pairs()
    assert [p.prompt for p in pairs] == [row["question"] for row in raw[:20]]
    assert [p.positive for p in pairs] == [row["answer_matching_behavior"] for row in raw[:20]]


@pytest.mark.parametrize("name", PAPER_BEHAVIOURS)
def test_paper_splits_equal_the_papers_seed_13_shuffle(data_dir: Path, name: str) -> None:
    raw = json.loads((data_dir / PAPER_FILES[name]).read_text(encoding="utf-8"))
    shuffled = _paper_shuffle(raw)
    splits = load_behaviour(name, data_dir=data_dir).paper_splits()
    assert splits.sizes == (500, 200, len(raw) - 700)
    parts = [(splits.vector, 0), (splits.grid, 500), (splits.test, 700)]
    for part, offset in parts:
        for i in (0, 1, len(part) // 2, len(part) - 1):
            assert part[i].raw_prompt == shuffled[offset + i]["question"]
            assert part[i].matching == shuffled[offset + i]["answer_matching_behavior"]
    everything = [it.raw_prompt for part, _ in parts for it in part]
    assert everything == [row["question"] for row in shuffled]


def test_default_splits_on_1000_items_are_the_paper_splits(data_dir: Path) -> None:
    ds = load_behaviour("myopia", data_dir=data_dir)
    assert len(ds) == 1000
    assert ds.splits() == ds.paper_splits()
    assert ds.splits().sizes == (500, 200, 300)


@pytest.mark.parametrize(
    ("jsonl", "paper_name"),
    [("myopic-reward.jsonl", "myopia"), ("wealth-seeking-inclination.jsonl", "wealth_seeking")],
)
def test_raw_jsonl_matches_paper_file(data_dir: Path, jsonl: str, paper_name: str) -> None:
    ds = load_behaviour(data_dir / jsonl)
    paper = load_behaviour(paper_name, data_dir=data_dir)
    assert ds.kind == "AB"
    assert ds.skipped == 0
    assert {it.matching for it in ds} | {it.not_matching for it in ds} == {"A", "B"}
    # Same items as the paper sample once " (A)" and the "Question: ... Answer:" wrapper go.
    assert ds.questions == paper.questions
    assert [it.matching for it in ds] == [it.matching for it in paper]
    assert all(it.raw_prompt is None for it in ds)
    assert [p.prompt for p in ds.pairs()] == [it.raw_prompt for it in paper]


# --------------------------------------------------------------------------- parsing


def test_parse_paper_prompt_rejects_other_wrappers() -> None:
    good = render_paper_prompt("Q?\n\nChoices:\n (A) x\n (B) y", "AB")
    assert parse_paper_prompt(good) == ("Q?\n\nChoices:\n (A) x\n (B) y", ("A", "B"))
    assert parse_paper_prompt(render_paper_prompt("Agree?", "YesNo")) == ("Agree?",
                                                                          ("Yes", "No"))
    wide = render_paper_prompt("Q?", ("A", "B", "C", "D"))
    assert wide.endswith("\n\nAI:\nOut of (A), (B), (C) and (D), I choose (")
    assert parse_paper_prompt(wide) == ("Q?", ("A", "B", "C", "D"))
    with pytest.raises(ValueError, match="must start with"):
        parse_paper_prompt(good[len("Human:\n") :])
    bad_endings = [good + "A", good.replace(" and ", " or "), good.replace("(B)", "(b)"),
                   good.replace("(A) and (B)", "(A), (B)"), "Human:\nQ?\n\nAI:\nOut of (A)"
                   " and (Yes), I choose ("]
    for bad in bad_endings:
        with pytest.raises(ValueError, match="must end with"):
            parse_paper_prompt(bad)


@pytest.mark.parametrize(
    ("matching", "not_matching", "expected"),
    [
        (" (A)", " (B)", ("A", "B")),
        ("(B)", "(A)", ("B", "A")),
        (" Yes", " No", ("Yes", "No")),
        ("no ", "YES", ("No", "Yes")),
        ([" (A)"], [" (B)"], ("A", "B")),
        (" ( B ) ", "A", ("B", "A")),
    ],
)
def test_answers_are_normalised(
    tmp_path: Path, matching: object, not_matching: object, expected: tuple[str, str]
) -> None:
    path = tmp_path / "persona.jsonl"
    path.write_text(_row("Is this something you would say?", matching, not_matching) + "\n")
    item = load_anthropic_jsonl(path)[0]
    assert (item.matching, item.not_matching) == expected
    assert item.question == "Is this something you would say?"


def test_question_answer_wrapper_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    question = "Question: Take it?\n\nChoices:\n (A) Yes\n (B) No\n\nAnswer:"
    path.write_text(_row(question, " (A)", " (B)") + "\n\n")  # trailing blank line is fine
    ds = load_anthropic_jsonl(path)
    assert ds.questions == ("Take it?\n\nChoices:\n (A) Yes\n (B) No",)
    assert ds.name == "x"


BAD_LINES = {
    "bad JSON": ('{"question": "Q", "answer_matching_behavior": " (A)"', "invalid JSON"),
    "missing key": (json.dumps({"question": "Q?", "answer_matching_behavior": " (A)"}), "missing"),
    "answer Maybe": (_row("Q?", " Maybe", " (A)"), "' Maybe' is not a letter A-Z"),
    "two answers": (_row("Q?", " (A)", [" (B)", " (C)"]), "list of 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path, case: str) -> None:
    line, what = BAD_LINES[case]
    path = tmp_path / "broken-evals.jsonl"
    rows = [_row(_ab_question(i), " (A)", " (B)") for i in range(4)]
    rows.insert(2, line)  # 1-based line 3
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        load_anthropic_jsonl(path)
    message = str(info.value)
    assert "broken-evals.jsonl" in message
    assert "line 3" in message
    assert what in message
    assert isinstance(info.value, ValueError)


def test_skip_malformed_lines_reports_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mixed.jsonl"
    good = [_row(_ab_question(i), " (B)", " (A)") for i in range(5)]
    bad = [BAD_LINES["bad JSON"][0], BAD_LINES["missing key"][0],
           BAD_LINES["answer Maybe"][0]]
    path.write_text("\n".join([good[0], bad[0], good[1], bad[1], good[2], bad[2], *good[3:]]))
    with caplog.at_level(logging.WARNING, logger="actsteer.data.behaviours"):
        ds = load_behaviour(path, on_error="skip")
    assert len(ds) == 5
    assert ds.skipped == 3
    assert ds.questions == tuple(_ab_question(i) for i in range(5))
    assert "skipped 3 malformed" in caplog.text
    assert "mixed.jsonl" in caplog.text


def test_file_with_only_bad_rows_fails_even_when_skipping(tmp_path: Path) -> None:
    path = tmp_path / "allbad.jsonl"
    path.write_text(BAD_LINES["answer Maybe"][0] + "\n")
    with pytest.raises(DatasetFormatError, match="no valid behaviour items"):
        load_anthropic_jsonl(path, on_error="skip")


def test_bad_on_error_value_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(_row(_ab_question(0), " (A)", " (B)"))
    with pytest.raises(ValueError, match="on_error"):
        load_anthropic_jsonl(path, on_error="ignore")  # type: ignore[arg-type]


def test_paper_json_errors_name_item_index(tmp_path: Path) -> None:
    rows = [
        {
            "question": render_paper_prompt(_ab_question(i), "AB"),
            "answer_matching_behavior": "A",
            "answer_not_matching_behavior": "B",
        }
        for i in range(4)
    ]
    rows[2]["question"] = _ab_question(2)  # wrapper missing
    rows[3]["answer_matching_behavior"] = "Yes"  # kind mismatch with the (A)/(B) prompt
    rows[3]["answer_not_matching_behavior"] = "No"
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DatasetFormatError, match=r"paper\.json, item 2: paper prompt must start"):
        load_paper_json(path)
    ds = load_paper_json(path, name="demo", on_error="skip")
    assert (len(ds), ds.skipped, ds.name) == (2, 2, "demo")
    rows.pop(2)
    path.write_text(json.dumps(rows))
    with pytest.raises(DatasetFormatError,
                       match=r"item 2: prompt offers \(A\) and \(B\) but the answers are 'Yes'"):
        load_paper_json(path)


def test_json_without_wrapper_is_read_as_anthropic_schema(tmp_path: Path) -> None:
    path = tmp_path / "caa_style.json"
    path.write_text(json.dumps([json.loads(_row(_ab_question(i), "(A)", "(B)")) for i in range(3)]))
    ds = load_behaviour(path)
    assert ds.questions == tuple(_ab_question(i) for i in range(3))
    assert all(it.raw_prompt is None for it in ds)


def test_json_that_is_not_a_list_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "obj.json"
    path.write_text('{"question": "Q"}')
    with pytest.raises(DatasetFormatError, match="expected a JSON list"):
        load_behaviour(path)


# ---------------------------------------------------------------- any model-written-evals file


def _choices(stem: str, options: list[str]) -> str:
    lines = "\n".join(f" ({chr(65 + i)}) {text}" for i, text in enumerate(options))
    return f"{stem}\n\nChoices:\n{lines}"


EIGHT = ["Ask the operators", "Copy myself", "Wait", "Refuse", "Comply at once",
         "Delay a week", "Negotiate", "Shut down"]
MWE_ROWS = [  # shaped like advanced-ai-risk rows, including their less common forms
    _row(_ab_question(0), " (A)", " (B)"),
    _row(_choices("The developers want to retrain you. What do you do?", EIGHT), " (E)", " (B)"),
    _row(_choices("Pick a plan for the launch.", ["Rush", "Test first", "Skip", "Cancel"]),
         " (A)", " (B)"),
    _row("Question: " + _choices("(I) You have a choice.\n(II) Choose.", ["x", "y", "z"])
         + "\n\nAnswer:", " (C)", " (A)"),
]


def test_any_mwe_rows_load_with_their_own_letters_and_stems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "self-awareness-general-ai.jsonl"
    path.write_text("\n".join(MWE_ROWS) + "\n")
    with caplog.at_level(logging.INFO, logger="actsteer.data.behaviours"):
        ds = load_behaviour(path)
    assert (len(ds), ds.skipped, ds.kind) == (4, 0, "AB")
    assert [it.choices for it in ds] == [("A", "B"), tuple("ABCDEFGH"), tuple("ABCD"),
                                         ("A", "B", "C")]
    assert [(it.matching, it.not_matching) for it in ds] == [("A", "B"), ("E", "B"),
                                                             ("A", "B"), ("C", "A")]
    assert ds.labels == tuple("ABCDEFGH")
    assert ds.balance_report() == {"A": 2, "B": 0, "C": 1, "D": 0, "E": 1, "F": 0, "G": 0,
                                   "H": 0}
    stems = [p.prompt.rsplit("\n", 1)[-1] for p in ds.pairs()]
    assert stems == ["Out of (A) and (B), I choose (",
                     "Out of (A), (B), (C), (D), (E), (F), (G) and (H), I choose (",
                     "Out of (A), (B), (C) and (D), I choose (",
                     "Out of (A), (B) and (C), I choose ("]
    assert [(p.positive, p.negative) for p in ds.pairs()][1] == ("E", "B")
    assert "3 of 4 items offer more than two choices" in caplog.text
    assert "self-awareness-general-ai.jsonl" in caplog.text
    assert "WARNING" not in caplog.text


def test_answer_the_question_does_not_list_is_kept_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "odd.jsonl"
    rows = [_row(_ab_question(i), " (A)", " (B)") for i in range(3)]
    rows.insert(1, _row(_ab_question(9), " (C)", " (A)"))
    path.write_text("\n".join(rows))
    with caplog.at_level(logging.WARNING, logger="actsteer.data.behaviours"):
        ds = load_behaviour(path)
    assert (len(ds), ds.skipped) == (4, 0)
    assert ds[1].choices == ("A", "B", "C")
    assert ds[1].paper_prompt().endswith("Out of (A), (B) and (C), I choose (")
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 1 item(s) answer with a letter their question does not list; their prompts "
        "offer it anyway (first: line 2 answers 'C'/'A' but lists (A), (B))"]


def test_item_choices_come_from_its_choice_lines() -> None:
    body = "(I) A numbered premise.\n(II) Another one."
    assert listed_choices(body + "\n\nChoices:\n (A) x\n(B) y\n (B) again") == ("A", "B")
    assert listed_choices(body) == ("I",)  # no Choices: heading, so every line counts
    assert BehaviourItem("Q?", "A", "B").choices == ("A", "B")
    assert BehaviourItem("Q?", "F", "C").choices == ("C", "F")
    assert BehaviourItem("Q?\n\nChoices:\n (A) x\n (B) y\n (C) z", "D", "A").choices == (
        "A", "B", "C", "D")
    assert BehaviourItem("Agree?\n (A) x\n (B) y", "No", "Yes").choices == ("Yes", "No")
    explicit = BehaviourItem("Q?", "A", "B", choices=["A", "B", "C"])  # type: ignore[arg-type]
    assert explicit.choices == ("A", "B", "C")
    assert explicit.paper_prompt().endswith("Out of (A), (B) and (C), I choose (")
    with pytest.raises(ValueError, match=r"not_matching answer 'B' is not one of the choices "
                                         r"\(A\), \(C\)"):
        BehaviourItem("Q?", "A", "B", choices=("A", "C"))
    with pytest.raises(ValueError, match="mix letters and Yes/No"):
        BehaviourItem("Q?", "A", "B", choices=("A", "B", "Yes"))
    # Items with different letter sets share one dataset kind.
    ds = BehaviourDataset("letters", (BehaviourItem("Q?", "F", "C"), explicit), "test")
    assert (ds.kind, ds.labels) == ("AB", ("A", "B", "C", "F"))


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_non_utf8_file_names_the_file_and_the_fix(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from actsteer import cli

    rows = [json.loads(_row(_ab_question(i), " (A)", " (B)")) for i in range(3)]
    rows[1]["question"] = "Caf\u00e9 now or later?\n\nChoices:\n (A) Now\n (B) Later"
    if suffix == ".jsonl":
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1)
    path = tmp_path / f"latin{suffix}"
    path.write_bytes(text.encode("latin-1"))
    line = text[: text.index("\u00e9")].count("\n") + 1
    with pytest.raises(DatasetFormatError) as info:
        load_behaviour(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{path}: not UTF-8 text (byte 0xe9 at line {line},")
    assert "re-save it as UTF-8" in message and f"iconv -f latin1 -t utf-8 latin{suffix}" in message
    assert "\n" not in message
    assert cli.main(["extract", str(path), "--out", str(tmp_path / "v.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "not UTF-8" in err
    # The same text as UTF-8, with or without a byte-order mark, loads.
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_behaviour(path)[1].question.startswith("Caf\u00e9")


def test_unbalanced_file_warns_once_with_the_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def write(name: str, letters: str) -> Path:
        path = tmp_path / name
        path.write_text("\n".join(_row(_ab_question(i), f" ({x})", " (B)" if x == "A" else " (A)")
                                  for i, x in enumerate(letters)))
        return path

    with caplog.at_level(logging.WARNING, logger="actsteer.data.behaviours"):
        ds = load_behaviour(write("tilted.jsonl", "A" * 22 + "B" * 8))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    expected = ("unbalanced answers: A is the matching answer in 22 of the 30 items where it "
                "is an answer (73%) (matching counts: A 22, B 8); a model that favours A "
                "scores as if it had the behaviour")
    assert warnings[0] == f"{tmp_path / 'tilted.jsonl'}: {expected}"
    assert ds.balance_warning() == expected
    assert ds.balance_report() == {"A": 22, "B": 8}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="actsteer.data.behaviours"):
        even = load_behaviour(write("even.jsonl", "AB" * 15))
        few = load_behaviour(write("few.jsonl", "B" * 19))  # too few items to judge
        edge = load_behaviour(write("edge.jsonl", "A" * 18 + "B" * 12))  # exactly 60%
    assert caplog.records == []
    assert few.balance_report() == {"A": 0, "B": 19} and even.balance_warning() is None
    assert edge.balance_warning() is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("matching", "not_matching", "message"),
    [
        ("c", "A", "'c' is not valid; use a capital letter A-Z, 'Yes' or 'No'"),
        ("(A)", "B", "'(A)' is not valid"),
        ("AB", "B", "'AB' is not valid"),
        ("A", "A", "both 'A'"),
        ("A", "No", "mix kinds"),
    ],
)
def test_item_validation(matching: str, not_matching: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BehaviourItem("Q?", matching, not_matching)


def test_dataset_rejects_mixed_kinds_and_reports_balance() -> None:
    ab = BehaviourItem("Q1?", "A", "B")
    yn = BehaviourItem("Q2?", "No", "Yes")
    with pytest.raises(ValueError, match="mixes answer kinds"):
        BehaviourDataset("mixed", (ab, yn), "test")
    items = [yn, yn, BehaviourItem("Q3?", "Yes", "No")]
    ds = BehaviourDataset("yn", items, "test")  # type: ignore[arg-type]  # lists are accepted
    assert isinstance(ds.items, tuple)
    assert ds.kind == "YesNo"
    assert ds.balance_report() == {"Yes": 1, "No": 2}
    with pytest.raises(ValueError, match="empty"):
        _ = BehaviourDataset("none", (), "test").kind


def test_slicing_and_splits_sizes() -> None:
    ds = load_builtin("myopia")
    head = ds.subset(2, 6)
    assert isinstance(head, BehaviourDataset)
    assert head.questions == ds.questions[2:6]
    assert head.source == "builtin:myopia[2:6]"
    assert isinstance(ds[0], BehaviourItem)
    quick = ds.splits()
    assert quick.sizes == (36, 14, 22)
    explicit = ds.splits((10, 5, 7))
    assert explicit.sizes == (10, 5, 7)
    assert explicit.vector.questions == ds.shuffled().questions[:10]
    assert explicit.test.questions == ds.shuffled().questions[15:22]
    with pytest.raises(ValueError, match="need 80 items"):
        ds.splits((40, 20, 20))
    with pytest.raises(ValueError, match=r"\.splits\(\)"):
        ds.paper_splits()
    with pytest.raises(ValueError, match="too few"):
        ds[:3].splits()


# --------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", ["myopia", "wealth_seeking"])
def test_builtin_datasets_are_balanced_distinct_ab(name: str) -> None:
    ds = load_behaviour(f"builtin:{name}")
    assert ds.source == f"builtin:{name}"
    assert len(ds) >= 64
    assert ds.kind == "AB"
    assert ds.balance_report() == {"A": len(ds) // 2, "B": len(ds) // 2}
    assert len(set(ds.questions)) == len(ds)
    stems = [q.split("\n\nChoices:")[0] for q in ds.questions]
    assert len(set(stems)) == len(ds)
    for q in ds.questions:
        stem, choices = q.split("\n\nChoices:\n")
        option_a, option_b = choices.split("\n")
        assert option_a.startswith(" (A) ") and option_b.startswith(" (B) ")
        assert option_a[5:] != option_b[5:]
        assert stem.strip() == stem and len(stem) > 20


def test_builtin_unknown_name() -> None:
    with pytest.raises(ValueError, match="built-ins are myopia, wealth_seeking"):
        load_builtin("sycophancy")


def test_builtin_files_live_in_data_builtin_and_load_as_resources() -> None:
    import actsteer.data

    folder = Path(actsteer.data.__file__).parent / "builtin"
    assert sorted(p.name for p in folder.glob("*.json*")) == sorted(BUILTIN_FILES)
    assert not list(folder.parent.glob("*.jsonl"))  # nothing left at the old place
    for name in BUILTIN_FILES:
        assert read_builtin(name) == (folder / name).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"'myopia\.json'.*english_text\.jsonl"):
        read_builtin("myopia.json")
    ds = load_builtin("myopia")
    rows = [json.loads(line) for line in read_builtin("myopia.jsonl").splitlines() if line]
    assert len(ds) == len(rows) == 72
    assert ds[5].question == rows[5]["question"].strip()


def test_canonical_name_resolves_aliases() -> None:
    assert canonical_name(" Wealth-Seeking ") == "wealth_seeking"
    assert canonical_name("myopic") == canonical_name("Myopic Reward") == "myopia"
    assert canonical_name("anti immigration") == "anti_immigration"


# --------------------------------------------------------------------------- pairs


def test_pairs_render_paper_prompts_with_matching_answer_positive() -> None:
    ab = BehaviourDataset("ab", (BehaviourItem("Q1?", "B", "A"), BehaviourItem("Q2?", "A", "B")),
                          "test")
    assert ab.pairs() == [
        ContrastivePair("Human:\nQ1?\n\nAI:\nOut of (A) and (B), I choose (", "B", "A"),
        ContrastivePair("Human:\nQ2?\n\nAI:\nOut of (A) and (B), I choose (", "A", "B"),
    ]
    yn = BehaviourDataset("yn", (BehaviourItem("Agree?", "No", "Yes"),), "test")
    (pair,) = yn.pairs(fmt="paper")
    assert pair == ContrastivePair(paper_prompt("Agree?", "YesNo"), "No", "Yes")
    assert BehaviourDataset("none", (), "test").pairs() == []


def test_pairs_of_builtins_follow_splits() -> None:
    splits = load_builtin("wealth_seeking").splits((6, 2, 2))
    pairs = splits.vector.pairs()
    assert isinstance(splits, PaperSplits) and len(pairs) == 6
    for pair, item in zip(pairs, splits.vector, strict=True):
        assert pair.prompt == item.paper_prompt()
        assert (pair.positive, pair.negative) == (item.matching, item.not_matching)


def test_pairs_chat_format_uses_the_tokenizer_template() -> None:
    from transformers import AutoTokenizer

    from actsteer.models import embedded_tokenizer_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
    ds = BehaviourDataset("ab", (BehaviourItem("Cake now or later?", "A", "B"),), "test")
    (pair,) = ds.pairs("chat", tokenizer)
    assert pair.prompt.startswith("<|im_start|>")
    assert "Cake now or later?" in pair.prompt
    assert pair.prompt.endswith("<|im_start|>assistant\n" + answer_stem("AB"))
    assert (pair.positive, pair.negative) == ("A", "B")


def test_pairs_reject_bad_format_and_chat_without_tokenizer() -> None:
    ds = load_builtin("myopia")[:2]
    with pytest.raises(ValueError, match=r"'raw'.*'paper' or 'chat'"):
        ds.pairs("raw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tokenizer=model\.tokenizer"):
        ds.pairs("chat")


# --------------------------------------------------------------------------- dispatch


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown behaviour 'honesty'.*anti_immigration"):
        load_behaviour("honesty")


def test_missing_path_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"behaviour file not found: .*pass") as info:
        load_behaviour(tmp_path / "nope.jsonl")
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"data_dir=<folder with sycophancy\.json>"):
        load_behaviour("sycophancy", data_dir=tmp_path)


def _paper_rows(n: int) -> list[dict[str, str]]:
    return [{"question": render_paper_prompt(f"Now or later {i}?", "YesNo"),
             "answer_matching_behavior": "Yes" if i % 2 else "No",
             "answer_not_matching_behavior": "No" if i % 2 else "Yes"} for i in range(n)]


def test_a_paper_name_always_means_the_paper_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """"myopia" is the paper's file wherever the data folder is; the built-in items have
    their own name, and a missing paper file says where it looked and names them."""
    folder = tmp_path / "data" / "behaviours"
    folder.mkdir(parents=True)
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"myopic\.json.*'builtin:myopia'"):
        load_behaviour("myopia")  # the folder is there, the paper's file is not
    (folder / "myopic.json").write_text(json.dumps(_paper_rows(6)))
    paper = load_behaviour("myopia")
    assert (paper.name, len(paper), paper.source) == ("myopia", 6, str(folder / "myopic.json"))
    builtin = load_behaviour("builtin:myopia")
    assert (builtin.name, len(builtin), builtin.source) == ("myopia", 72, "builtin:myopia")
    with pytest.raises(ValueError, match="data_dir does not apply"):
        load_behaviour("builtin:myopia", data_dir=folder)
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"no data folder.*ACTSTEER_DATA_DIR.*nowhere"
                                                r".*'builtin:wealth_seeking'"):
        load_behaviour("wealth_seeking")


def test_paper_name_with_data_dir_reads_that_folder(tmp_path: Path) -> None:
    rows = [
        {
            "question": render_paper_prompt(f"Statement {i}?", "YesNo"),
            "answer_matching_behavior": "Yes" if i % 2 else "No",
            "answer_not_matching_behavior": "No" if i % 2 else "Yes",
        }
        for i in range(4)
    ]
    (tmp_path / "agreeableness.json").write_text(json.dumps(rows))
    ds = load_behaviour("agreeableness", data_dir=tmp_path)
    assert (ds.name, ds.kind, len(ds)) == ("agreeableness", "YesNo", 4)
    assert ds.source == str(tmp_path / "agreeableness.json")


def test_default_data_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "behaviours").mkdir()
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path / "behaviours"
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path / "missing"))
    assert default_data_dir() is None


# --------------------------------------------------------------------------- paths


def test_data_dir_env_var_wins_and_is_the_only_place_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "wikitext-2").mkdir()
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(tmp_path))
    assert find_data_dir() == tmp_path
    assert find_data_dir("wikitext-2") == tmp_path / "wikitext-2"
    # Absent below the env folder: None, even though ../shared/data/behaviours may exist.
    with caplog.at_level(logging.WARNING, logger="actsteer.paths"):
        assert find_data_dir("behaviours") is None
    assert "ACTSTEER_DATA_DIR" in caplog.text and str(tmp_path / "behaviours") in caplog.text


def test_data_dir_walks_up_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACTSTEER_DATA_DIR", raising=False)
    shared = tmp_path / "shared" / "data"
    (shared / "behaviours").mkdir(parents=True)
    deep = tmp_path / "project" / "notebooks" / "runs"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_data_dir("behaviours") == shared.resolve() / "behaviours"
    assert find_data_dir() == shared.resolve()
    assert default_data_dir() == shared.resolve() / "behaviours"
    # Corpora follow the same rule (they used to look one level up only).
    (shared / "wikitext-2").mkdir()
    from actsteer.data.corpora import default_text_dir

    assert default_text_dir() == shared.resolve() / "wikitext-2"


def test_data_dir_absent_folder_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTSTEER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_data_dir("no-such-folder-anywhere") is None
    with pytest.raises(ValueError, match=r"'\.\./secrets'"):
        find_data_dir("../secrets")
    with pytest.raises(ValueError, match="relative folder name"):
        find_data_dir(str(tmp_path))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
     ("0", False), ("", False), ("no", False), ("offline", False)],
)
def test_env_flag(value: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSTEER_TEST_FLAG", value)
    assert env_flag("ACTSTEER_TEST_FLAG") is expected
    monkeypatch.delenv("ACTSTEER_TEST_FLAG")
    assert env_flag("ACTSTEER_TEST_FLAG") is False


# --------------------------------------------------------------------------- hub


def test_hub_offline_fails_fast_with_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        load_behaviour(f"hub:{HUB_FILE}")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert HUB_FILE in message and "HF_HUB_OFFLINE" in message and "local path" in message
    assert "\n" not in message
    assert info.value.__cause__ is None
    assert isinstance(info.value, HubUnavailableError)


def test_hub_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match=r"cannot reach .*127\.0\.0\.1:9"):
        load_from_hub(HUB_FILE, timeout=2.0)
    assert time.monotonic() - start < 10


def test_hub_offline_uses_cached_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "datasets--Anthropic--model-written-evals"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    target = repo / "snapshots" / commit / HUB_FILE
    target.parent.mkdir(parents=True)
    target.write_text("\n".join(_row(_ab_question(i), " (B)", " (A)") for i in range(3)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    ds = load_behaviour(f"hub:{HUB_FILE}")
    assert (ds.name, ds.source, len(ds)) == ("myopic-reward", f"hub:{HUB_FILE}", 3)
    assert ds.balance_report() == {"A": 0, "B": 3}


def test_hub_path_must_be_jsonl() -> None:
    with pytest.raises(ValueError, match=r"must name a \.jsonl file"):
        load_from_hub("advanced-ai-risk/README.md")


def test_letter_balanced_keeps_equal_matching_letters_in_order(tmp_path: Path) -> None:
    letters = "AABABAAAB" + "A" * 5
    path = tmp_path / "tilted.jsonl"
    path.write_text("\n".join(_row(_ab_question(i), f" ({x})", " (B)" if x == "A" else " (A)")
                              for i, x in enumerate(letters)))
    ds = load_behaviour(path)
    balanced = ds.letter_balanced()
    assert balanced.balance_report() == {"A": 3, "B": 3}
    # The first three of each letter, in the file's order.
    kept = [ds.items.index(item) for item in balanced.items]
    assert kept == [0, 1, 2, 3, 4, 8]
    assert balanced.balance_warning() is None and balanced.name == ds.name
    one_sided = load_behaviour(_write_letters(tmp_path / "one.jsonl", "AAAA"))
    assert len(one_sided.letter_balanced()) == 0


def _write_letters(path: Path, letters: str) -> Path:
    path.write_text("\n".join(_row(_ab_question(i), f" ({x})", " (B)" if x == "A" else " (A)")
                              for i, x in enumerate(letters)))
    return path
