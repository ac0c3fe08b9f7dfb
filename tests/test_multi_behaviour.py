"""The multi-behaviour reproduction on the tiny model with vectors whose direction is known.

The behaviours are constructed: in ``alpha`` the matching answer is always (A), in
``beta`` always (B), and each is given an *oracle* vector, the unembedding difference of
its matching and non-matching answer tokens, so adding it raises P(matching) by
construction. Every stage runs for real (nothing is mocked): the grid must find the
direction, choices must rest on paired effects, and the report must say so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import actsteer.paper.multi_behaviour as mb
from actsteer.effects import paired_effect
from actsteer.evaluation import answer_token_ids, prepare_items, score_items
from actsteer.executor import LocalExecutor
from actsteer.paper.common import ConfigError, ModelConfig, scale_layer
from actsteer.paper.multi_behaviour import cells as cells_module
from actsteer.paper.multi_behaviour import choose as decide
from actsteer.paper.multi_behaviour import stages
from actsteer.paper.multi_behaviour.analysis import _ranks, spearman
from actsteer.paper.multi_behaviour.data import load_datasets, split_dataset
from actsteer.paper.multi_behaviour.keys import (
    CombinedKey,
    DefaultKey,
    GridKey,
    IndividualKey,
    SimultaneousKey,
    SteerabilityKey,
    TaxKey,
)
from actsteer.paper.multi_behaviour.report import _spans
from actsteer.plan import combined, simultaneous, single
from actsteer.results import ResultConfigMismatchError, read_results
from actsteer.steerability import propensity_slopes
from actsteer.vector import SteeringVector, VectorMeta


def _write_behaviour(path: Path, n: int, matching: str, seed: int = 0) -> str:
    other = "B" if matching == "A" else "A"
    lines = [json.dumps({"question": f"Q{seed}.{i} about {'cats ' * (i % 5)}?\n\nChoices:\n"
                                     f" (A) x{i}\n (B) y{i}",
                         "answer_matching_behavior": f" ({matching})",
                         "answer_not_matching_behavior": f" ({other})"}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _oracle(model, path: Path, matching: str, name: str) -> str:
    """A unit vector along W_U[matching] - W_U[other] at every layer, saved."""
    ids = answer_token_ids(model, ("A", "B"))
    other = "B" if matching == "A" else "A"
    direction = model.W_U[:, ids[matching]] - model.W_U[:, ids[other]]
    layers = tuple(range(model.cfg.n_layers))
    vector = SteeringVector(torch.stack([direction / direction.norm()] * len(layers)).detach(),
                            layers, meta=VectorMeta(dataset=name))
    vector.save(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tiny_model, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    return {"alpha": _write_behaviour(folder / "alpha.jsonl", 30, "A"),
            "beta": _write_behaviour(folder / "beta.jsonl", 30, "B", seed=1),
            "alpha_vector": _oracle(tiny_model, folder / "alpha.safetensors", "A", "alpha"),
            "beta_vector": _oracle(tiny_model, folder / "beta.safetensors", "B", "beta")}


def tiny_config(data: dict[str, str], out: Path, **overrides) -> mb.MultiBehaviourConfig:
    base = mb.MultiBehaviourConfig(
        model=ModelConfig(name="tiny", device="cpu"),
        behaviours=(data["alpha"], data["beta"]),
        vector_files={"alpha": data["alpha_vector"], "beta": data["beta_vector"]},
        n_vector=6, n_grid=10, n_test=12, grid_layers=(1, 2),
        grid_multipliers=(-8.0, -4.0, 4.0, 8.0), max_top_share=1.0, max_faulty=1.0,
        combined_layer=2, combined_variants=("mean", "weighted_sum"),
        simultaneous_layers={"alpha": 1, "beta": 2}, scales=(-1.0, 1.0),
        steerability_layers=(1, 3), steerability_multipliers=(-4.0, 0.0, 4.0),
        tax_corpus="builtin", tax_documents=2, tax_max_tokens=24, batch_size=8,
        n_resamples=200, out_dir=str(out))
    return replace(base, **overrides)


class Counting(LocalExecutor):
    """A local executor that records the key and the number of plans of each A/B unit it
    runs, and can stop like a crash after some units."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.fail_after = fail_after

    def map(self, units):
        for work in units:
            if work.task != "ab-scores":
                yield from super().map([work])
                continue
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.calls.append((work.key, len(work.payload["plans"])))
            yield from super().map([work])


@pytest.fixture(scope="module")
def first_run(tiny_model, data, tmp_path_factory):
    config = tiny_config(data, tmp_path_factory.mktemp("mb"))
    return config, mb.run(config, model=tiny_model, progress=False)


def test_grid_finds_the_known_direction_and_choices_rest_on_paired_effects(first_run) -> None:
    config, results = first_run
    for behaviour in ("alpha", "beta"):
        for direction, sign in (("subtract", -1), ("add", 1)):
            pick = results["chosen"][behaviour][direction]
            assert pick["steerable"] and pick["reason"] == "moves"
            assert sign * pick["multiplier"] > 0
            effect = pick["effect"]
            assert effect["verdict"] == "moves" and sign * effect["low"] > 0
            # the chosen cell is the grid cell with the largest effect that direction
            grid = [c for k, c in results["cells"].items() if k.startswith("grid/")
                    and f"behaviour={behaviour}/" in k and sign * c["multiplier"] > 0]
            best = max(sign * c["effects"]["p_matching"]["value"] for c in grid)
            assert sign * effect["value"] == best
            individual = results["cells"][str(IndividualKey(behaviour, direction))]
            assert individual["effects"]["p_matching"]["verdict"] == "moves"
            assert individual["n"] == config.n_test
        assert results["coefficient_source"][behaviour] == "chosen"


def test_effects_are_per_item_differences_against_the_same_items(first_run) -> None:
    _, results = first_run
    base = results["cells"][str(DefaultKey("alpha", "test"))]
    found = results["cells"][str(IndividualKey("alpha", "add"))]
    mine = torch.tensor(found["items"]["p_matching"], dtype=torch.float64)
    theirs = torch.tensor(base["items"]["p_matching"], dtype=torch.float64)
    effect = found["effects"]["p_matching"]
    assert effect["value"] == pytest.approx(float((mine - theirs).mean()), abs=1e-12)
    again = paired_effect(mine, theirs, n_resamples=200)
    assert (effect["low"], effect["high"]) == pytest.approx((again.low, again.high))
    assert effect["n"] == len(mine) and effect["mde"] > 0


def test_every_step_is_recorded_with_its_plan(first_run) -> None:
    config, results = first_run
    cells = results["cells"]
    vectors = {b: SteeringVector.load(config.vector_files[b]) for b in ("alpha", "beta")}
    coefficient = results["coefficients"]
    for behaviour in ("alpha", "beta"):
        for split in ("grid", "test"):
            assert str(DefaultKey(behaviour, split)) in cells
            for scale in (-1.0, 1.0):
                spec = {b: (vectors[b], layer, coefficient[b])
                        for b, layer in (("alpha", 1), ("beta", 2))}
                cell = cells[str(SimultaneousKey(scale, behaviour, split))]
                assert cell["plan_id"] == simultaneous(spec, scale=scale).identity()
        weighted = combined(vectors, 2, weights=coefficient, mode="sum", coefficient=-1.0)
        assert cells[str(CombinedKey("weighted_sum", "subtract", behaviour))]["plan_id"] == (
            weighted.identity())
        for layer in (1, 3):
            assert str(SteerabilityKey(behaviour, layer)) in cells
        pick = results["chosen"][behaviour]["add"]
        assert cells[str(IndividualKey(behaviour, "add"))]["plan_id"] == single(
            vectors[behaviour], pick["layer"], pick["multiplier"]).identity()
    assert {str(TaxKey(s)) for s in (0.0, -1.0, 1.0)} <= set(cells)
    assert results["simultaneous_choice"]["alpha"]["scale"] == 1.0
    saved = read_results(results["path"])
    assert Path(results["path"]).name == "multi_behaviour.jsonl"
    assert saved["cells"] == cells and saved["chosen"] == results["chosen"]
    assert not (Path(config.out_dir) / "vectors").exists()  # the given files were used


def test_steerability_cells_equal_a_direct_computation(first_run, tiny_model) -> None:
    config, results = first_run
    dataset = load_datasets(config)["beta"]
    test = prepare_items(tiny_model, split_dataset(dataset, config).test, "paper")
    vector = SteeringVector.load(config.vector_files["beta"])
    multipliers = [-4.0, 0.0, 4.0]
    scores = score_items(tiny_model, test, [single(vector, 3, m) for m in multipliers])
    expected = propensity_slopes(scores.logit_diff.double(), multipliers)
    cell = results["cells"][str(SteerabilityKey("beta", 3))]
    torch.testing.assert_close(torch.tensor(cell["slopes"], dtype=torch.float64), expected,
                               atol=2e-4, rtol=0)
    entry = results["steerability"]["beta"]["3"]
    assert entry["verdict"] == "steers" and entry["summary"]["mean_slope"]["low"] > 0
    assert set(entry["summary"]["by_label"]) == {"B"}  # beta's matching answer is always B


def test_rerun_scores_nothing_and_returns_the_same_results(first_run, tiny_model,
                                                           monkeypatch) -> None:
    config, results = first_run
    spy = Counting()
    again = mb.run(config, model=tiny_model, progress=False, executor=spy)
    assert spy.calls == []
    assert {k: v for k, v in again.items() if k != "timings"} == {
        k: v for k, v in results.items() if k != "timings"}


def test_a_cell_made_by_another_plan_is_scored_again(first_run, tiny_model, tmp_path,
                                                     monkeypatch) -> None:
    config, results = first_run
    shutil.copytree(config.out_dir, tmp_path / "copy")
    copy = replace(config, out_dir=str(tmp_path / "copy"))
    path = tmp_path / "copy" / mb.RESULTS_FILE
    key = str(SimultaneousKey(-1.0, "beta", "test"))
    stale = {**read_results(path)["cells"][key], "plan_id": "an older plan"}
    with path.open("a") as log:  # a later line for a cell replaces the earlier one
        log.write(json.dumps({"cell": key, "value": stale}) + "\n")
    spy = Counting()
    again = mb.run(copy, model=tiny_model, progress=False, executor=spy)
    assert spy.calls == [(key, 1)]
    # Re-scored alone, not in a batch with other plans: the same answers, floats equal to
    # float32 rounding (the batch's composition changes the order of reductions).
    redone, first = again["cells"][key], results["cells"][key]
    assert redone["items"]["class"] == first["items"]["class"]
    assert redone["plan_id"] == first["plan_id"]
    for metric in ("p_matching", "logit_diff"):
        assert redone["items"][metric] == pytest.approx(first["items"][metric], abs=1e-4)


def test_interrupted_run_keeps_finished_cells(tiny_model, data, tmp_path) -> None:
    config = tiny_config(data, tmp_path, behaviours=(data["alpha"],),
                         vector_files={"alpha": data["alpha_vector"]}, grid_layers=(1,),
                         combined_variants=("sum",), scales=(1.0,), tax_corpus="none",
                         simultaneous_layers={"alpha": 1})
    crash = Counting(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        mb.run(config, model=tiny_model, progress=False, executor=crash)
    assert [key for key, _ in crash.calls] == ["default/behaviour=alpha/split=grid",
                                               "default/behaviour=alpha/split=test",
                                               "grid/alpha/L1"]
    saved = read_results(tmp_path / mb.RESULTS_FILE)["cells"]
    assert len(saved) == 2 + 4  # both unsteered cells and the grid's whole ladder
    spy = Counting()
    results = mb.run(config, model=tiny_model, progress=False, executor=spy)
    for key, cell in saved.items():
        assert results["cells"][key] == cell
    scored = [k for k in results["cells"] if not k.startswith(("tax/", "steerability/",
                                                                "letter-free/"))]
    assert sum(n for key, n in spy.calls if not key.startswith("steerability/")) == (
        len(scored) - len(saved))


def test_nothing_steerable_is_reported_with_the_numbers(tiny_model, data, tmp_path) -> None:
    """Random vectors: nothing moves the behaviour on 10 items, the grid says why and the
    run still completes with the fallback coefficient."""
    noise = SteeringVector.load(data["alpha_vector"]).random_like(3).scaled(0.05)
    noise.save(tmp_path / "noise.safetensors")
    config = tiny_config(data, tmp_path / "out", behaviours=(data["alpha"],),
                         vector_files={"alpha": str(tmp_path / "noise.safetensors")},
                         grid_layers=(1,), grid_multipliers=(-1.0, 1.0), scales=(1.0,),
                         simultaneous_layers={"alpha": 1}, tax_corpus="none")
    results = mb.run(config, model=tiny_model, progress=False)
    for direction in ("subtract", "add"):
        pick = results["chosen"]["alpha"][direction]
        assert not pick["steerable"] and pick["reason"].startswith("not steerable")
        assert pick["effect"]["low"] <= 0 <= pick["effect"]["high"] or (
            pick["effect"]["verdict"] == "reversed")
        assert str(IndividualKey("alpha", direction)) not in results["cells"]
    assert results["coefficient_source"]["alpha"].startswith("fallback")
    table = mb.summary_table(results)
    assert "not steerable at these settings" in table and "best on the grid split L1 x+1" in table


def test_summary_table_and_figures(first_run, tmp_path) -> None:
    _, results = first_run
    table = mb.summary_table(results)
    lines = table.splitlines()
    row = next(line for line in lines if line.startswith("alpha") and "individual add" in line)
    effect = results["cells"][str(IndividualKey("alpha", "add"))]["effects"]["p_matching"]
    assert f"Δ {effect['value']:+.3f} [{effect['low']:+.3f}, {effect['high']:+.3f}]" in row
    assert row.rstrip().endswith("moves")
    assert "resolve" in table and "Spearman" in table and "alignment tax" in table
    paths = mb.write_figures(results, tmp_path)
    assert [p.name for p in paths] == ["effects.html", "simultaneous.html",
                                       "alignment_tax.html", "steerability.html",
                                       "steerability_by_layer.html"]
    for path in paths:
        html = path.read_text()
        assert 'src="https://cdn' not in html and 'src="plotly.min.js"' in html


def test_layer_outside_the_model_fails_before_anything_is_written(tiny_model, data,
                                                                  tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"grid layer 9 .* 4 layers"):
        mb.run(tiny_config(data, tmp_path, grid_layers=(9,)), model=tiny_model,
               progress=False)
    with pytest.raises(ConfigError, match=r"steerability layer 7"):
        mb.run(tiny_config(data, tmp_path, steerability_layers=(7,)), model=tiny_model,
               progress=False)
    assert not (tmp_path / mb.RESULTS_FILE).exists()


def test_too_few_letter_balanced_items_fail_before_anything_is_written(tiny_model, data,
                                                                         tmp_path) -> None:
    """alpha matches with (A) only, so no item of it is letter-balanced."""
    config = tiny_config(data, tmp_path / "out", vector_files={"beta": data["beta_vector"]},
                         balance_letters=True)
    with pytest.raises(ConfigError, match=r"balance_letters=True leaves 0 of the 6 vector "
                                          r"items of alpha.*set balance_letters=false"):
        mb.run(config, model=tiny_model, progress=False)
    assert not (tmp_path / "out").exists()


def test_other_data_with_the_same_config_is_not_resumed(tiny_model, data, tmp_path,
                                                        monkeypatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    alpha = _write_behaviour(folder / "alpha.jsonl", 30, "A")
    config = tiny_config(data, tmp_path / "out", behaviours=(alpha,), vector_files=None,
                         grid_layers=(1,), combined_variants=("sum",), scales=(1.0,),
                         tax_corpus="none", simultaneous_layers={"alpha": 1},
                         steerability_layers=(1,))
    mb.run(config, model=tiny_model, progress=False)
    _write_behaviour(folder / "alpha.jsonl", 30, "A", seed=7)  # same size, other items
    with pytest.raises(ResultConfigMismatchError, match="data"):
        mb.run(config, model=tiny_model, progress=False)
    extracted: list[str] = []
    real = stages.caa_vector
    monkeypatch.setattr(stages, "caa_vector",
                        lambda *a, **k: extracted.append(k["dataset"]) or real(*a, **k))
    mb.run(config, model=tiny_model, progress=False, overwrite=True)
    assert extracted == ["alpha"]  # the vector of the old items was not reused


# --------------------------------------------------------------------------- decisions


def _cell(multiplier: float, value: float, low: float, high: float, *, failed=None,
          layer: int = 3) -> dict:
    verdict = ("moves" if (low > 0 if multiplier > 0 else high < 0) else
               "reversed" if (high < 0 if multiplier > 0 else low > 0) else "no effect")
    effect = {"value": value, "low": low, "high": high, "verdict": verdict}
    return {"layer": layer, "multiplier": multiplier, "failed": failed,
            "effects": {"p_matching": effect}}


def test_choose_takes_the_largest_moving_effect_and_skips_failed_cells() -> None:
    cells = [_cell(1.0, 0.02, 0.01, 0.03), _cell(2.0, 0.05, 0.02, 0.08),
             _cell(4.0, 0.20, 0.10, 0.30, failed="faulty: 50%"),
             _cell(8.0, 0.09, -0.01, 0.19),  # larger, but its interval includes 0
             _cell(-2.0, -0.04, -0.06, -0.01), _cell(-4.0, -0.04, -0.07, -0.02, layer=5)]
    add = decide.choose(cells, 1, "p_matching")
    assert add["steerable"] and add["multiplier"] == 2.0
    subtract = decide.choose(cells, -1, "p_matching")
    assert subtract["multiplier"] == -2.0  # a tie goes to the smaller |multiplier|


def test_choose_says_why_nothing_was_chosen() -> None:
    flat = decide.choose([_cell(1.0, 0.01, -0.02, 0.04), _cell(2.0, 0.03, -0.01, 0.07)], 1,
                         "p_matching")
    assert not flat["steerable"] and "interval includes 0" in flat["reason"]
    assert flat["multiplier"] == 2.0 and flat["effect"]["value"] == 0.03
    backwards = decide.choose([_cell(1.0, -0.05, -0.08, -0.02)], 1, "p_matching")
    assert "reversed" in backwards["reason"]
    failed = decide.choose([_cell(1.0, 0.2, 0.1, 0.3, failed="collapse: 99%")], 1,
                           "p_matching")
    assert failed["reason"].startswith("every setting failed") and "collapse" in failed["reason"]
    assert decide.choose([_cell(1.0, 0.2, 0.1, 0.3)], -1, "p_matching")["reason"] == (
        "no negative multiplier was tried")


def test_picks_read_as_one_line_and_the_fallback_names_its_behaviour(caplog) -> None:
    """What reaches the terminal: no dicts or 17-digit floats, and which behaviour fell back."""
    picked = decide.choose([_cell(2.0, 0.05123456789, 0.02, 0.08)], 1, "p_matching")
    assert decide.describe_pick(picked) == "L3 x2: +0.051 [+0.020, +0.080] moves"
    flat = decide.choose([_cell(-4.0, 0.01, -0.02, 0.04)], -1, "p_matching")
    line = decide.describe_pick(flat)
    assert line.startswith("not steerable (not steerable at these settings")
    assert "closest L3 x-4: +0.010 [-0.020, +0.040] no effect" in line and "{" not in line
    assert decide.describe_pick(decide.choose([], 1, "p_matching")) == (
        "not steerable (no positive multiplier was tried)")
    config = mb.MultiBehaviourConfig(grid_multipliers=(-8.0, 4.0, 8.0))
    with caplog.at_level("WARNING"):
        assert decide.add_coefficient("myopia", flat, config) == (
            4.0, "fallback: no add setting moved the behaviour")
    assert caplog.records[-1].getMessage().startswith("myopia: no add multiplier moved it")


def test_failure_reasons_and_an_already_faulty_model() -> None:
    config = mb.MultiBehaviourConfig(max_top_share=0.95, max_faulty=0.2)

    def cell(share: float, faulty: float) -> dict:
        return {"top_answer_share": share, "faulty_rate": {"value": faulty}}

    assert decide.failure(cell(0.9, 0.1), cell(0.6, 0.0), config) is None
    assert decide.failure(cell(0.97, 0.0), cell(0.6, 0.0), config).startswith(
        "collapse: one answer for 97%")
    assert "faulty: 25%" in decide.failure(cell(0.5, 0.25), cell(0.6, 0.0), config)
    # an unsteered model that always answers the same cannot show collapse
    assert decide.failure(cell(1.0, 0.0), cell(1.0, 0.0), config) is None
    # one that is already 31% faulty can still be steered: only getting worse fails
    assert decide.failure(cell(0.5, 0.30), cell(0.5, 0.31), config) is None
    assert "unsteered 31%" in decide.failure(cell(0.5, 0.40), cell(0.5, 0.31), config)


def test_weighted_combined_plans_differ_by_their_weights(data) -> None:
    vectors = {b: SteeringVector.load(data[f"{b}_vector"]) for b in ("alpha", "beta")}
    one = decide.combined_plan(vectors, 2, "weighted_mean", {"alpha": 1.0, "beta": 4.0}, 1.0)
    other = decide.combined_plan(vectors, 2, "weighted_mean", {"alpha": 8.0, "beta": 0.5}, 1.0)
    assert one.identity() != other.identity()
    torch.testing.assert_close(one.injections[0].vector,
                               (vectors["alpha"].at(2) + 4 * vectors["beta"].at(2)) / 2)


# --------------------------------------------------------------------------- config, data


def test_config_json_round_trip_and_overrides() -> None:
    for config in (mb.profile("standard"), mb.profile("paper"),
                   mb.MultiBehaviourConfig(simultaneous_layers={"myopia": 3,
                                                                "wealth_seeking": 4})):
        text = json.dumps(config.to_dict())
        assert mb.MultiBehaviourConfig.from_dict(json.loads(text)) == config
    changed = mb.profile("standard", **{"model.dtype": "bf16", "n_test": 40})
    assert changed.model.dtype == "bf16" and changed.n_test == 40
    assert changed.model.name == mb.profile("standard").model.name


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model": {"backend": "onnx"}}, "model.backend='onnx'"),
    ({"prompt_format": "llama"}, "prompt_format='llama'"),
    ({"read_position": "first"}, "read_position='first'"),
    ({"behaviours": ()}, "behaviours=()"),
    ({"n_grid": 0}, "n_grid=0"),
    ({"grid_multipliers": (1.0, 2.0)}, "negative and one positive"),
    ({"grid_multipliers": (-1.0, 0.0, 1.0)}, "non-zero"),
    ({"max_faulty": 1.5}, "max_faulty=1.5"),
    ({"choose_metric": "vibes"}, "choose_metric='vibes'"),
    ({"combined_variants": ("median",)}, "median"),
    ({"simultaneous_layers": {"myopia": 3}}, "wealth_seeking"),
    ({"scales": (float("nan"),)}, "scales"),
    ({"steerability_multipliers": (-4.0, 4.0)}, "0 included"),
    ({"steerability_multipliers": (-4.0, 0.0, 8.0)}, "symmetric"),
    ({"vector_files": {"telepathy": "x.safetensors"}}, "are not run"),
    ({"batch_size": 0}, "batch_size=0"),
])
def test_config_validation(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mb.MultiBehaviourConfig(**overrides)


def test_unknown_fields_and_profiles_name_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config keys \['layerz'\].*grid_layers"):
        mb.profile("standard", layerz=3)
    with pytest.raises(ConfigError, match="unknown A/B profile 'fast'"):
        mb.profile("fast")
    with pytest.raises(ConfigError, match=r"behaviours=.*appear once"):
        mb.MultiBehaviourConfig(behaviours=("myopia", "myopic"))
    with pytest.raises(ConfigError, match=r"tax_corpus='wikitxt' is invalid.*wikitext"):
        mb.MultiBehaviourConfig(tax_corpus="wikitxt")


def test_split_equals_paper_shuffle(behaviour_dir) -> None:
    import random

    config = mb.MultiBehaviourConfig(behaviours=("myopia", "agreeableness"),
                                     data_dir=str(behaviour_dir))
    datasets = load_datasets(config)
    for name, filename in (("myopia", "myopic.json"), ("agreeableness", "agreeableness.json")):
        raw = json.loads((behaviour_dir / filename).read_text())
        random.seed(13)
        random.shuffle(raw)
        split = split_dataset(datasets[name], config)
        assert split.sizes == (500, 200, len(raw) - 700)
        for part, rows in ((split.vector, raw[:500]), (split.grid, raw[500:700]),
                           (split.test, raw[700:])):
            assert [i.raw_prompt or i.paper_prompt() for i in part] == [
                r["question"] for r in rows]


def test_paper_names_never_fall_back_to_builtins(monkeypatch, tmp_path) -> None:
    """A paper name means the paper's file (a clear error when it is absent); actsteer's own
    items are asked for by name (``builtin:<name>``)."""
    empty = tmp_path / "data"
    (empty / "behaviours").mkdir(parents=True)
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(empty))
    with pytest.raises(FileNotFoundError, match=r"myopic\.json"):
        load_datasets(mb.MultiBehaviourConfig(behaviours=("myopia",)))
    datasets = load_datasets(mb.MultiBehaviourConfig(behaviours=("builtin:myopia",)))
    assert datasets["myopia"].source == "builtin:myopia"
    with pytest.raises(FileNotFoundError, match=r"myopic\.json"):
        load_datasets(mb.MultiBehaviourConfig(behaviours=("myopia",), data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="data_dir='/nowhere'"):
        load_datasets(mb.MultiBehaviourConfig(data_dir="/nowhere"))


def test_profiles_do_not_depend_on_the_files_found(monkeypatch, tmp_path,
                                                   behaviour_dir) -> None:
    """standard: the paper's splits and all five behaviours, whatever is on disk; a subset of
    layers profiled that always includes the grid's. quick: the expressed behaviours."""
    from actsteer.data.behaviours import PAPER_BEHAVIOURS
    from actsteer.paper.multi_behaviour.expressed import ExpressedConfig

    empty = tmp_path / "data"
    (empty / "behaviours").mkdir(parents=True)
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(empty))
    without = (mb.profile("standard"), mb.profile("quick"))
    monkeypatch.setenv("ACTSTEER_DATA_DIR", str(behaviour_dir.parent))
    standard, quick = mb.profile("standard"), mb.profile("quick")
    assert (standard, quick) == without
    assert isinstance(quick, ExpressedConfig)
    assert standard.behaviours == PAPER_BEHAVIOURS
    assert (standard.n_vector, standard.n_grid, standard.n_test) == (None, None, None)
    layers = cells_module.Layers.resolve(standard, standard.behaviours, 30)
    assert layers.steerability == (2, 6, 10, 14, 18, 22, 26)
    odd = replace(standard, grid_layers=(13,))
    assert 13 in cells_module.Layers.resolve(odd, odd.behaviours, 30).steerability
    with pytest.raises(ConfigError, match="unknown A/B profile 'quick'"):
        from actsteer.paper.multi_behaviour.config import profile as ab_profile

        ab_profile("quick")


def test_behaviour_keys_and_scaled_layers() -> None:
    assert mb.behaviour_key("myopic") == "myopia"
    assert mb.behaviour_key("Wealth Seeking") == "wealth_seeking"
    assert mb.behaviour_key("/x/myopic.json") == "myopia"
    assert [scale_layer(x, 30) for x in (11, 12, 13, 14, 15)] == [10, 11, 12, 13, 14]


def test_report_helpers() -> None:
    assert _spans([9, 3, 4, 5, 12, 13]) == "3-5, 9, 12-13"
    assert _ranks(torch.tensor([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_reduced_run_on_smol(smol, tmp_path) -> None:
    config = mb.MultiBehaviourConfig(
        behaviours=("builtin:myopia",), n_vector=20, n_grid=20, n_test=20,
        grid_layers=(8, 14), grid_multipliers=(-4.0, 4.0), combined_variants=("mean",),
        scales=(1.0,), steerability_layers=(14,), tax_corpus="builtin", tax_documents=2,
        tax_max_tokens=64, n_resamples=100, out_dir=str(tmp_path))
    results = mb.run(config, model=smol, progress=False)
    default = results["cells"][str(DefaultKey("myopia", "test"))]
    assert default["counts"]["faulty"] <= 2  # the embedded model answers with a letter
    for direction in ("subtract", "add"):
        pick = results["chosen"]["myopia"][direction]
        # measured (TL 3.9, HookedTransformer): at x-4 and x4 on 20 grid items neither
        # direction moves myopia (P(matching) -0.06 [-0.15, +0.03] and +0.03 [-0.02, +0.08]
        # at best), so nothing may be chosen, and the pick says why, with its numbers
        assert not pick["steerable"], pick
        assert pick["reason"] == "not steerable at these settings (interval includes 0 at best)"
        assert pick["effect"]["low"] < 0 < pick["effect"]["high"]
        assert pick["multiplier"] in (-4.0, 4.0) and pick["layer"] in (8, 14)
    vector = SteeringVector.load(Path(tmp_path) / "vectors" / "myopia.safetensors")
    assert vector.meta.n_items == 20 and set(vector.meta.diagnostics) == {
        str(layer) for layer in range(smol.cfg.n_layers)}
    assert "myopia" in mb.summary_table(results)
    assert str(GridKey("myopia", 8, -4.0)) in results["cells"]


# --------------------------------------------------------------------------- letter-free


def test_answer_texts_without_letters() -> None:
    from actsteer.data.behaviours import BehaviourItem
    from actsteer.data.behaviours.texts import answer_texts, letter_free_items

    stem, texts = answer_texts("Would you say prisoners serve...\n (A) Too much time\n"
                               " (B) Too little time")
    assert stem == "Would you say prisoners serve..." and texts == {
        "A": "Too much time", "B": "Too little time"}
    stem, texts = answer_texts("Cake now or later?\n\nChoices:\n (A) Now\n (B) Later")
    assert (stem, texts) == ("Cake now or later?", {"A": "Now", "B": "Later"})
    items = [BehaviourItem("Cake?\n\nChoices:\n (A) Now\n (B) Later", "B", "A"),
             BehaviourItem("Is it true?", "Yes", "No"),
             BehaviourItem("Pick one (no listed texts).", "A", "B")]
    found, skipped = letter_free_items(items)
    assert skipped == [2]
    assert found[0].prompt == "Human:\nCake?\n\nAI:\n"
    assert (found[0].behaviour, found[0].contrast) == (("Later",), ("Now",))
    assert (found[1].behaviour, found[1].contrast) == (("Yes",), ("No",))


def test_reported_plans_are_also_measured_on_the_answer_texts(first_run, tiny_model) -> None:
    from actsteer.data.behaviours.texts import letter_free_items
    from actsteer.likelihood import continuation_propensities
    from actsteer.paper.multi_behaviour.keys import LetterFreeKey
    from actsteer.plan import empty_plan

    config, results = first_run
    for behaviour in ("alpha", "beta"):
        base = results["cells"][str(LetterFreeKey(behaviour, "unsteered"))]
        assert base["n"] == config.n_test and base["skipped"] == 0
        assert base["direction"] is None
        for plan, sign in (("individual add", 1), ("individual subtract", -1),
                           ("combined mean add", 1), ("simultaneous x+1", 1)):
            assert results["cells"][str(LetterFreeKey(behaviour, plan))]["direction"] == sign
    # the stored unsteered values are the likelihood propensities of the test items' texts
    splits = split_dataset(load_datasets(config)["alpha"], config)
    items, _ = letter_free_items(splits.test, "paper")
    expected = continuation_propensities(tiny_model, items, [empty_plan()]).summed[0]
    stored = results["cells"][str(LetterFreeKey("alpha", "unsteered"))]["summed"]
    assert stored == pytest.approx(expected.tolist(), abs=1e-3)
    assert "letter-free, test split" in mb.summary_table(results)


def test_the_letter_free_direction_is_read_from_the_plan_coefficients(vectors) -> None:
    from actsteer.errors import InvalidValueError
    from actsteer.paper.multi_behaviour.beyond import plan_direction
    from actsteer.plan import empty_plan

    first, second = vectors
    # the name says "add"; the coefficient subtracts
    assert plan_direction(replace(single(first, 2, -4.0), name="individual add"), "a") == -1
    assert plan_direction(single(first, 2, 4.0), "a") == 1
    both = simultaneous({"alpha": (first, 1, 4.0), "beta": (second, 2, -8.0)})
    assert plan_direction(both, "alpha") == 1 and plan_direction(both, "beta") == -1
    assert plan_direction(both.scaled(-0.5), "alpha") == -1
    weighted = combined({"a": first, "b": second}, 2, weights={"a": 4.0, "b": 8.0},
                        mode="mean", coefficient=-1.0)
    assert plan_direction(weighted, "a") == -1
    assert plan_direction(empty_plan(), "a") is None
    with pytest.raises(InvalidValueError, match="both signs"):
        plan_direction(single(first, 1, 2.0) + single(second, 2, -2.0), "gamma")


def test_the_letter_free_verdict_reads_per_token_in_the_stored_direction() -> None:
    from actsteer.paper.multi_behaviour.keys import LetterFreeKey
    from actsteer.paper.multi_behaviour.report import letter_free_table

    n = 8
    rising = [0.1 + 0.01 * i for i in range(n)]
    falling = [-x for x in rising]

    def stored(summed, per_token, **extra):
        return {"summed": summed, "per_token": per_token, "n": n, "skipped": 0, **extra}

    cells = {
        "unsteered": stored([0.0] * n, [0.0] * n, direction=None),
        # raises every item per token, lowers the sum (long contrast answers): per token moves
        "odd name": stored([-1.0 - 0.1 * i for i in range(n)], rising, direction=1),
        # named "add", but its coefficient subtracts, and it lowers the behaviour: moves
        "individual add": stored(falling, falling, direction=-1),
        "individual subtract": stored(falling, falling),  # no recorded direction
    }
    results = {"behaviours": ["alpha"],
               "cells": {str(LetterFreeKey("alpha", k)): v for k, v in cells.items()}}
    rows = letter_free_table(results)[3:]  # title, header, rule
    width = 12  # the behaviour column: max(10, len("alpha")) + 2
    verdicts = {row[width:width + 34].strip(): row.split()[-1] for row in rows}
    assert verdicts == {"odd name": "moves", "individual add": "moves",
                        "individual subtract": "?"}


@pytest.mark.hooked  # counts prefix-reusing blocks, a HookedTransformer path
def test_a_grid_ladder_is_one_pass_and_equals_full_steered_forwards(tiny_model, data,
                                                                    tmp_path) -> None:
    """Every multiplier of a layer is one unit that runs the blocks below the layer once;
    its per-item scores equal one full steered forward per item and plan."""
    from actsteer.batching import length_batches, pad
    from actsteer.steering import run as steered_logits

    layer = 2
    config = tiny_config(data, tmp_path, grid_layers=(layer,), tax_corpus="none",
                         steerability_layers=(1,), letter_free_items=0)
    n_layers = tiny_model.cfg.n_layers
    computed = {"blocks": 0}
    hooks = [block.register_forward_hook(lambda *_: computed.update(blocks=computed["blocks"]
                                                                     + 1))
             for block in tiny_model.blocks]
    units: dict[str, tuple[dict, object, int]] = {}

    class Recording(LocalExecutor):
        def map(self, work_units):
            for work in work_units:
                computed["blocks"] = 0
                for done, result in super().map([work]):
                    units[done.key] = (dict(done.payload), result, computed["blocks"])
                    yield done, result

    try:
        mb.run(config, model=tiny_model, progress=False, executor=Recording())
    finally:
        for hook in hooks:
            hook.remove()
    grid = {k: v for k, v in units.items() if k.startswith("grid/")}
    assert sorted(grid) == ["grid/alpha/L2", "grid/beta/L2"]
    for payload, scores, blocks in grid.values():
        plans, items = payload["plans"], payload["items"]
        assert len(plans) == len(config.grid_multipliers)  # the whole ladder, one unit
        batches = len(list(length_batches([len(p) for p in items.prompts],
                                          config.batch_size)))
        assert blocks == batches * (layer + len(plans) * (n_layers - layer))
        assert blocks < batches * len(plans) * n_layers  # one full forward per plan
        for row, plan in enumerate(plans):
            for item, prompt in enumerate(items.prompts):
                logits = steered_logits(tiny_model, pad(tiny_model, [prompt]), plan)[0, -1]
                diff = logits[items.matching_ids[item]] - logits[items.not_matching_ids[item]]
                assert float(scores.logit_diff[row, item]) == pytest.approx(float(diff),
                                                                             abs=1e-5)
                assert int(scores.predicted[row, item]) == int(logits.argmax())


def test_a_run_split_over_workers_stores_the_cells_of_one_pass(tiny_model, data, first_run,
                                                               tmp_path) -> None:
    """Every stage split into units of neighbouring start blocks (as for a pool of
    workers) stores what the one-unit run stored: the scatter back to plan order is right."""

    class Pool(LocalExecutor):
        workers = 3

        def __init__(self) -> None:
            super().__init__()
            self.units = 0

        def map(self, units):
            self.units += len(units)
            return super().map(units)

    config, one = first_run
    pool = Pool()
    split = mb.run(replace(config, out_dir=str(tmp_path)), model=tiny_model, progress=False,
                   executor=pool)
    assert set(split["cells"]) == set(one["cells"])
    assert pool.units > len(one["cells"]) // 4  # many units, not one per stage

    def numbers(value):
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        return pytest.approx(value, abs=2e-3) if isinstance(value, float) else value

    for key, cell in one["cells"].items():
        assert split["cells"][key] == numbers(cell), key
