"""The harness's protocol: the strength is chosen on one half only, the results log resumes,
the config refuses bad values, the table renders (issue 25)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from recording import Recording

from actsteer.harness import HarnessConfig, profile, run, table
from actsteer.harness.analysis import choose_strength, thresholds_for
from actsteer.harness.instructions import split_instructions
from actsteer.harness.report import LABEL
from actsteer.paper.common import ConfigError
from actsteer.results.log import replay


def _cell(concept: list[float], relevance: list[float], fluency: list[float]) -> dict[str, Any]:
    n = len(concept)
    return {"texts": [""] * n, "concept": concept, "relevance": relevance, "fluency": fluency,
            "distinct": [1.0] * n, "vader": None}


def _cells() -> dict[str, Any]:
    """Synthetic cells: on the select half strength 0.1 wins, on the report half 0.2 would."""
    reference = _cell([0.0, 0.0], [0.5, 0.5], [-2.0, -2.0])
    return {
        "b/unsteered/0/select": reference, "b/unsteered/0/report": copy.deepcopy(reference),
        "b/steering/0/select": reference, "b/steering/0/report": copy.deepcopy(reference),
        "b/steering/0.1/select": _cell([9.0, 9.0], [0.5, 0.5], [-2.0, -2.0]),
        "b/steering/0.1/report": _cell([0.0, 0.0], [0.5, 0.5], [-2.0, -2.0]),
        "b/steering/0.2/select": _cell([9.0, 9.0], [0.5, 0.5], [-9.0, -9.0]),
        "b/steering/0.2/report": _cell([9.0, 9.0], [0.5, 0.5], [-2.0, -2.0]),
    }


def test_strength_is_chosen_on_the_select_half_only() -> None:
    cells = _cells()
    chosen, _ = choose_strength(cells, "b", "steering", thresholds_for(cells, "b"))
    assert chosen == 0.1
    changed = copy.deepcopy(cells)  # any change to the report half, references included
    for key, cell in changed.items():
        if key.endswith("/report"):
            cell.update(concept=[50.0, 50.0], relevance=[-1.0, 3.0], fluency=[-0.1, -30.0])
    assert choose_strength(changed, "b", "steering", thresholds_for(changed, "b"))[0] == 0.1
    assert thresholds_for(changed, "b") == thresholds_for(cells, "b")
    changed["b/steering/0.1/select"]["concept"] = [0.0, 0.0]  # the select half decides
    changed["b/steering/0.2/select"]["fluency"] = [-2.0, -2.0]
    assert choose_strength(changed, "b", "steering", thresholds_for(changed, "b"))[0] == 0.2


def test_split_is_fixed_by_the_seed_and_disjoint() -> None:
    first, again = split_instructions(10, seed=3), split_instructions(10, seed=3)
    assert first == again and not set(first["select"]) & set(first["report"])
    assert len(first["select"]) == 5 and len(first["report"]) == 5
    assert split_instructions(10, seed=4) != first
    with pytest.raises(ValueError, match="n_instructions=3"):
        split_instructions(3)


@pytest.mark.parametrize("field, value, message", [
    ("strengths", (0.1, 0.2), "0 included"),
    ("methods", ("steering", "clamps"), "choose distinct names"),
    ("n_instructions", 41, "4..40"),
    ("behaviours", ("nonsense",), "nonsense"),
])
def test_config_refuses_bad_values(field: str, value: Any, message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        HarnessConfig().with_overrides({field: value})


def _tiny_config(out_dir: str) -> HarnessConfig:
    return profile("quick", out_dir=out_dir, n_instructions=4, strengths=(0.0, 0.5),
                   methods=("steering", "prompting"), max_new_tokens=2, n_resamples=50,
                   layer=1, detection_folds=2)


@pytest.fixture(scope="module")
def whole(tiny_model, tmp_path_factory) -> tuple[dict[str, Any], int]:
    """An uninterrupted run on the tiny model, and how many units it ran."""
    executor = Recording(tiny_model)
    folder = tmp_path_factory.mktemp("harness_whole")
    return run(_tiny_config(str(folder)), tiny_model, progress=False, executor=executor), \
        executor.asked


def test_harness_writes_the_log_and_resumes(tiny_model, tmp_path, whole) -> None:
    """A run killed after 2 units keeps their cells; the rerun computes only the rest and
    gives the table of an uninterrupted run; a third run computes nothing."""
    config = _tiny_config(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run(config, tiny_model, progress=False, executor=Recording(tiny_model, stop_after=2))
    assert len(replay(tmp_path / "harness.jsonl").cells) >= 2
    resumed_executor = Recording(tiny_model)
    resumed = run(config, tiny_model, progress=False, executor=resumed_executor)
    assert resumed_executor.asked == whole[1] - 2
    again = Recording(tiny_model)
    run(config, tiny_model, progress=False, executor=again)
    assert again.asked == 0  # everything finished: nothing recomputed
    assert resumed["cells"] == whole[0]["cells"]
    assert str(table(resumed)) == str(table(whole[0]))


def test_table_renders_text_and_html(whole) -> None:
    results = whole[0]
    shown = table(results)
    text, page = str(shown), shown._repr_html_()
    assert text.splitlines()[0] == LABEL and LABEL in page
    assert [row[1] for row in shown.rows] == ["unsteered", "steering", "prompting"]
    assert shown.rows[1][7] != "-" and shown.rows[1][8] != "-"  # vs prompting, detection
    assert page.count("<tr>") == len(shown.rows) + 1
    assert results["generator"].startswith(("TransformerBridge", "HookedTransformer"))


def test_cli_flags_build_the_config(tmp_path) -> None:
    from actsteer.cli import build_parser
    from actsteer.cli.harness import harness_config

    args = build_parser().parse_args(["harness", "--behaviours", "wedding", "--instructions",
                                      "10", "--strengths", "0", "0.3", "--out", str(tmp_path),
                                      "--set", "max_new_tokens=16"])
    config = harness_config(args)
    assert (config.behaviours, config.n_instructions, config.strengths, config.out_dir,
            config.max_new_tokens) == (("wedding",), 10, (0.0, 0.3), str(tmp_path), 16)


def test_cli_refuses_a_bad_ladder_before_loading(capsys, tmp_path) -> None:
    from actsteer.cli import main

    code = main(["harness", "--strengths", "0.1", "0.2", "--out", str(tmp_path)])
    assert code == 2 and "0 included" in capsys.readouterr().err
    assert not (tmp_path / "harness.jsonl").exists()
