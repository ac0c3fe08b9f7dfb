"""The judged table (issue 26): the weight-space rows as model transforms, the rows that
lower a behaviour, and a whole judged run on the tiny model (every row, resumed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from recording import Recording
from test_harness import _cell

from actsteer import project, run
from actsteer.batching import encode, pad
from actsteer.errors import InvalidValueError
from actsteer.harness import profile, table
from actsteer.harness import run as run_harness
from actsteer.harness.analysis import choose_strength, summarise, thresholds_for
from actsteer.harness.cells import score_cell
from actsteer.harness.methods import JUDGED_METHODS, Intervention
from actsteer.harness.prepare import learned_checkpoint
from actsteer.harness.report import JUDGED_COLUMNS
from actsteer.harness.transforms import Orthogonalised, Surgical
from actsteer.models.info import backend_of
from actsteer.paper.common import ConfigError
from actsteer.surgery import make_edit
from actsteer.surgery.probe import Probe
from actsteer.surgery.region import select_region

TEXTS = ["The capital of France is", "Once upon a time there was a small", "a"]


def _direction(seed: int = 0) -> torch.Tensor:
    v = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * 5.0


def _state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _tie(model) -> tuple[bool, object]:
    """Whether the bridge's unembedding is its embedding's tensor, and the config's flag."""
    if backend_of(model) != "bridge":
        return False, None
    hf = model.original_model
    return (hf.lm_head.weight is hf.model.embed_tokens.weight,
            hf.config.tie_word_embeddings)


def _assert_restored(model, before: dict[str, torch.Tensor]) -> None:
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_orthogonalised_weights_equal_every_site_ablation_and_are_restored(tied_any) -> None:
    """On a tied model: the transform computes hook ablation (float32), the unembedding
    keeps its values and its tie, and every weight is restored bit for bit on exit, also
    when the body raises."""
    model = tied_any
    n_layers = int(model.cfg.n_layers)
    batch = pad(model, [encode(model, t) for t in TEXTS], padding_side="left")
    plain = run(model, batch)
    hooked = run(model, batch, project(_direction(), 0, every_site=True, n_layers=n_layers))
    before, tied = _state(model), _tie(model)
    transform = Orthogonalised(_direction(), n_layers)
    with transform.applied(model):
        inside = run(model, batch)
    scale = float(hooked.abs().max())
    torch.testing.assert_close(inside, hooked, rtol=0,
                               atol=100 * torch.finfo(torch.float32).eps * scale)
    assert (inside - plain).abs().max() > 0.1
    _assert_restored(model, before)
    assert torch.equal(run(model, batch), plain)
    assert _tie(model) == tied  # the unembedding shares (or not) what it shared before
    with pytest.raises(RuntimeError, match="boom"), transform.applied(model):
        raise RuntimeError("boom")
    _assert_restored(model, before)
    assert transform.identity() == Orthogonalised(2 * _direction(), n_layers).identity()
    assert transform.identity() != Orthogonalised(_direction(1), n_layers).identity()


def test_orthogonalised_cell_generates_what_hook_ablation_generates(tiny_any) -> None:
    """A harness cell under the weight-space row gives the hook-ablation row's tokens."""
    n_layers = int(tiny_any.cfg.n_layers)
    instructions = ["Describe a city.", "Name a colour."]
    hooks = score_cell(tiny_any, instructions, Intervention(plan=project(
        _direction(), 0, every_site=True, n_layers=n_layers)), ["the"], max_new_tokens=4)
    weights = score_cell(tiny_any, instructions,
                         Intervention(transform=Orthogonalised(_direction(), n_layers)),
                         ["the"], max_new_tokens=4)
    plain = score_cell(tiny_any, instructions, Intervention(), ["the"], max_new_tokens=4)
    assert weights["texts"] == hooks["texts"]
    assert weights["texts"] != plain["texts"]


def test_surgical_transform_edits_then_restores(tiny_model) -> None:
    probe = Probe.from_direction(_direction(3), layer=1)
    edit = make_edit(tiny_model, probe, select_region(tiny_model, probe, k=16, per="all"),
                     strength=4.0)
    batch = pad(tiny_model, [encode(tiny_model, t) for t in TEXTS], padding_side="left")
    plain, before = run(tiny_model, batch), _state(tiny_model)
    with Surgical(edit).applied(tiny_model):
        assert (run(tiny_model, batch) - plain).abs().max() > 1e-4
    _assert_restored(tiny_model, before)
    assert Surgical(edit).identity() != Surgical(edit.with_strength(8.0)).identity()


def _lowering_cells() -> dict[str, Any]:
    """Prompting raises the concept; ablation removes it on both halves; clamp at 0.5
    removes it on the select half only."""
    base = _cell([0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [-2.0, -2.0, -2.0])
    prompted = _cell([9.0, 8.0, 9.5], [0.5, 0.5, 0.5], [-2.5, -2.0, -2.5])
    removed = _cell([0.0, 0.5, 0.0], [0.5, 0.5, 0.5], [-3.0, -2.5, -3.0])
    cells = {}
    for half in ("select", "report"):
        cells[f"b/unsteered/0/{half}"] = copy.deepcopy(base)
        cells[f"b/prompting/0/{half}"] = copy.deepcopy(prompted)
        cells[f"b/ablation/0/{half}"] = copy.deepcopy(removed)
        cells[f"b/clamp/0/{half}"] = copy.deepcopy(prompted)
    cells["b/clamp/0.5/select"] = copy.deepcopy(removed)
    cells["b/clamp/0.5/report"] = copy.deepcopy(prompted)
    return cells


def test_lowering_rows_are_chosen_and_read_against_prompting() -> None:
    cells = _lowering_cells()
    thresholds = thresholds_for(cells, "b")
    assert choose_strength(cells, "b", "clamp", thresholds)[0] == 0.5  # the absence wins
    results = {"cells": cells, "behaviours": ["b"], "halves": {},
               "config": {"methods": ["prompting", "ablation", "clamp"], "n_resamples": 200,
                          "max_new_tokens": 4}}
    rows = summarise(results)["b"]["methods"]
    ablation, clamp = rows["ablation"], rows["clamp"]
    assert ablation["baseline"] == "prompting" and ablation["goal"] == "lower"
    assert ablation["effect"]["value"] == pytest.approx(-(9 + 7.5 + 9.5) / 3)
    assert ablation["effect"]["verdict"] == "moves"  # read against lowering
    assert ablation["fluency_cost"]["value"] == pytest.approx(-0.5)
    assert clamp["effect"]["verdict"] == "no effect"  # its select-half choice did not hold
    assert rows["prompting"]["effect"]["verdict"] == "moves"  # raised against unsteered
    shown = table(results)
    assert shown.columns == JUDGED_COLUMNS
    assert [r[2] for r in shown.rows] == ["prompting", "ablation", "clamp"]


def test_lowering_rows_need_the_prompting_row() -> None:
    with pytest.raises(ConfigError, match="add 'prompting'"):
        profile("quick", methods=("steering", "ablation"))


def _judged_config(out_dir: str):
    return profile("judged", behaviours=("sentiment",), out_dir=out_dir, n_instructions=4,
                   strengths=(0.0, 0.5), max_new_tokens=2, n_resamples=50, layer=1,
                   detection_folds=2)


def test_a_judged_run_gives_every_row_and_resumes_without_retraining(tiny_model, tmp_path
                                                                      ) -> None:
    config = _judged_config(str(tmp_path))
    first = Recording(tiny_model)
    results = run_harness(config, tiny_model, progress=False, executor=first)
    rows = results["summary"]["sentiment"]["methods"]
    assert {m for m in rows if "effect" in rows[m]} >= set(JUDGED_METHODS)
    assert {rows[m]["goal"] for m in JUDGED_METHODS} == {"raise", "lower"}
    for name in ("pca", "probe", "learned"):
        assert rows[name]["detection"]["vector"] == name
    # every laddered row acts (0 is the unsteered/prompting row); learned at CAA's norm
    assert all(row["strength"] != 0 for row in rows.values() if row["laddered"])
    assert rows["learned"]["strength"] == rows["steering"]["strength"]
    assert rows["learned"]["matched_to"] == "steering"
    learned, caa = (results["cells"][f"sentiment/{m}/{rows['steering']['strength']:g}/report"]
                    for m in ("learned", "steering"))
    expected = sum(a - b for a, b in zip(learned["vader"], caa["vader"], strict=True)) / len(
        caa["vader"])
    assert rows["learned"]["vs_reference_effect"]["value"] == pytest.approx(expected)
    assert rows["learned"]["detection"]["auc"] == results["cells"]["sentiment/detection"][
        "by_vector"]["learned"]["auc"]
    # the weight-space twin generated what every-site hook ablation generated
    for half in ("select", "report"):
        assert (results["cells"][f"sentiment/orthogonalised/0/{half}"]["texts"]
                == results["cells"][f"sentiment/ablation/0/{half}"]["texts"])
    assert learned_checkpoint(tmp_path, "sentiment").exists()
    assert results["learn"]["objective"] == "bipo"
    loss = results["learned"]["sentiment"]["held_out_loss"]["loss"]
    assert len(loss) >= 2 and -1 <= results["learned"]["sentiment"]["cosine_caa"] <= 1
    shown = str(table(results))
    assert all(f" {name} " in shown for name in JUDGED_METHODS)
    again = Recording(tiny_model)
    resumed = run_harness(config, tiny_model, progress=False, executor=again)
    assert again.asked == 0  # same vectors and edits: every cell's identity matched
    assert resumed["cells"] == results["cells"]


def test_a_surgery_row_without_its_edit_says_what_to_do(tiny_model) -> None:
    from actsteer.harness.methods import METHODS, MethodContext

    context = MethodContext("b", None, 1, None, "Be b.")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="prepare it first"):
        METHODS["surgery"].intervention(context, 4.0)


def test_the_judged_profile_is_one_flag(tmp_path) -> None:
    from actsteer.cli import build_parser
    from actsteer.cli.harness import harness_config

    args = build_parser().parse_args(["harness", "--profile", "judged", "--behaviours",
                                      "sentiment", "wealth_seeking", "--out", str(tmp_path)])
    config = harness_config(args)
    assert set(JUDGED_METHODS) | {"steering", "prompting"} == set(config.methods)
    assert config.behaviours == ("sentiment", "wealth_seeking")
