"""The multi-behaviour experiment: config, splits, plans, resumption, report."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import experiments.multi_behaviour as mb
from actsteer.behaviours import DatasetFormatError, load_builtin
from actsteer.extraction import ContrastivePair, caa_vector
from actsteer.figures.behaviours import write_figures
from actsteer.plan import SteeringPlan
from actsteer.prompts import format_item
from actsteer.results import ResultConfigMismatchError
from actsteer.vector import SteeringVector, VectorMeta


def _write_behaviour(path: Path, n: int, seed: int) -> str:
    """A short synthetic A/B dataset (short prompts keep the tiny runs fast)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        matching = rng.choice("AB")
        lines.append(json.dumps({
            "question": f"Q{i}?\n\nChoices:\n (A) x{i}\n (B) y{i}",
            "answer_matching_behavior": f" ({matching})",
            "answer_not_matching_behavior": f" ({'B' if matching == 'A' else 'A'})"}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


ALPHA = BETA = ""  # paths set by the module fixture below


@pytest.fixture(scope="module", autouse=True)
def _datasets(tmp_path_factory) -> None:
    global ALPHA, BETA
    folder = tmp_path_factory.mktemp("data")
    ALPHA = _write_behaviour(folder / "alpha.jsonl", 20, 0)
    BETA = _write_behaviour(folder / "beta.jsonl", 20, 1)


def tiny_config(out: Path, **overrides) -> mb.MultiBehaviourConfig:
    base = mb.MultiBehaviourConfig(
        behaviours=(ALPHA, BETA), n_vector=6, n_grid=4, n_test=5,
        grid_layers=(1, 2), grid_multipliers=(-4.0, -1.0, 1.0, 4.0),
        max_top_share=1.0, max_faulty=1.0, combined_layer=2,
        combined_variants=("mean", "weighted_sum"),
        simultaneous_layers={"alpha": 1, "beta": 2}, scales=(-1.0, 2.0),
        tax_corpus="builtin", tax_documents=2, tax_max_tokens=24, batch_size=8,
        n_resamples=50, out_dir=str(out))
    return replace(base, **overrides)


class Spy:
    """Wraps score_items, counting calls and recording (desc, plans)."""

    def __init__(self, real, fail_after: int | None = None) -> None:
        self.real, self.fail_after = real, fail_after
        self.calls: list[tuple[str | None, list[SteeringPlan]]] = []

    def __call__(self, model, prompts, matching, other, plans, **kwargs):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append((kwargs.get("desc"), list(plans)))
        return self.real(model, prompts, matching, other, plans, **kwargs)


def _without_timings(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "timings"}


@pytest.fixture(scope="module")
def first_run(tiny_model, tmp_path_factory):
    """One full tiny run with a spy, shared by several tests."""
    out = tmp_path_factory.mktemp("mb")
    config = tiny_config(out)
    spy = Spy(mb.score_items)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mb, "score_items", spy)
        # On a random model no multiplier reliably helps, so `choose` (tested on its own
        # below) would often pick nothing; fix the pick at L2 x+-4 so every step runs.
        patch.setattr(mb, "choose", _fixed_pick)
        results = mb.run(config, model=tiny_model, progress=False)
    return config, results, spy


def _fixed_pick(grid, default_rate, direction, default_p=None):
    for cell in grid.values():
        if cell["layer"] == 2 and cell["multiplier"] == 4.0 * direction:
            return {"layer": 2, "multiplier": cell["multiplier"]}
    return None


def test_run_records_every_step(first_run) -> None:
    config, results, spy = first_run
    cells = results["cells"]
    for behaviour in results["behaviours"]:
        assert f"default/{behaviour}/test" in cells
        assert {f"grid/{behaviour}/L{layer}/{m:+g}" for layer in (1, 2)
                for m in config.grid_multipliers} <= set(cells)
        for which, sign in (("subtract", -1.0), ("add", 1.0)):
            assert results["chosen"][behaviour][which]["multiplier"] == 4.0 * sign
            individual = cells[f"individual/{behaviour}/{which}"]
            assert individual["n"] == config.n_test != config.n_grid  # the test split
        assert f"simultaneous/+2/{behaviour}" in cells
        assert f"combined/weighted_sum/subtract/{behaviour}" in cells
        cell = cells[f"default/{behaviour}/test"]
        assert sum(cell["counts"].values()) == config.n_test == len(cell["items"]["class"])
    assert {"tax/+0", "tax/-1", "tax/+2"} <= set(cells)
    saved = json.loads(Path(results["path"]).read_text())
    assert saved["cells"] == cells
    assert saved["extra"]["chosen"] == results["chosen"]
    assert set(saved["extra"]["timings"]) >= {"vectors", "grid", "simultaneous"}
    for behaviour in ("alpha", "beta"):
        assert (Path(config.out_dir) / "vectors" / f"{behaviour}.safetensors").is_file()
    # every scored plan is one cell; a behaviour's simultaneous (and combined) plans go
    # through one call, so they share the unsteered prefix
    assert sum(len(plans) for _, plans in spy.calls) == sum(
        1 for k in cells if not k.startswith("tax/"))
    for behaviour in results["behaviours"]:
        (batched,) = [plans for desc, plans in spy.calls
                      if desc == f"simultaneous/{behaviour} (2 plans)"]
        assert [p.describe() for p in batched] == [
            cells[f"simultaneous/{scale}/{behaviour}"]["plan"] for scale in ("-1", "+2")]


def test_simultaneous_and_combined_plans_as_specified(first_run) -> None:
    config, results, spy = first_run
    names = ("alpha", "beta")
    vectors = {b: SteeringVector.load(Path(config.out_dir) / "vectors" / f"{b}.safetensors")
               for b in names}
    coefficient = results["coefficients"]
    by_description = {plan.describe(): plan for _, plans in spy.calls for plan in plans}
    plans = {key: by_description[cell["plan"]] for key, cell in results["cells"].items()
             if "plan" in cell and not key.startswith("tax/")}
    sim = plans["simultaneous/+2/alpha"]
    assert sorted((i.label, i.layer) for i in sim.injections) == [("alpha", 1), ("beta", 2)]
    for injection in sim.injections:
        assert injection.coefficient == pytest.approx(2.0 * coefficient[injection.label])
        torch.testing.assert_close(injection.vector, vectors[injection.label].at(
            injection.layer))
    (weighted,) = plans["combined/weighted_sum/add/alpha"].injections
    expected = sum(coefficient[b] * vectors[b].at(2) for b in names)
    assert weighted.layer == 2 and weighted.coefficient == 1.0
    torch.testing.assert_close(weighted.vector, expected)
    (mean,) = plans["combined/mean/subtract/beta"].injections
    torch.testing.assert_close(mean.vector, sum(vectors[b].at(2) for b in names) / 2)
    assert mean.coefficient == pytest.approx(-sum(abs(coefficient[b]) for b in names) / 2)
    # individual steering uses the chosen setting
    pick = results["chosen"]["alpha"]["add"]
    (single_injection,) = plans["individual/alpha/add"].injections
    assert (single_injection.layer, single_injection.coefficient) == (
        pick["layer"], pick["multiplier"])
    (weighted_down,) = plans["combined/weighted_sum/subtract/alpha"].injections
    torch.testing.assert_close(weighted_down.vector, expected)
    assert weighted_down.coefficient == -1.0
    # the alignment tax at each scale ran the simultaneous plan of that scale
    spec = {b: (vectors[b], layer, coefficient[b]) for b, layer in (("alpha", 1), ("beta", 2))}
    for scale in (-1.0, 2.0):
        assert results["cells"][f"tax/{scale:+g}"]["plan"] == mb.simultaneous(
            spec, scale=scale).describe()
    assert results["cells"]["tax/+0"]["plan"] == mb.empty_plan().describe()


def test_saved_vector_is_matching_minus_non_matching_on_the_vector_split(first_run,
                                                                        tiny_model) -> None:
    config, _, _ = first_run
    dataset = mb.load_datasets(config)["alpha"]
    split = mb.split_dataset(dataset, config)
    pairs = [ContrastivePair(format_item(i.question, i.kind, "paper", tiny_model.tokenizer),
                             i.matching, i.not_matching) for i in split.vector]
    expected = caa_vector(tiny_model, pairs, dataset="alpha", batch_size=config.batch_size)
    saved = SteeringVector.load(Path(config.out_dir) / "vectors" / "alpha.safetensors")
    torch.testing.assert_close(saved.directions, expected.directions)
    assert saved.meta.n_items == config.n_vector


def test_rerun_scores_nothing_and_returns_same_results(first_run, tiny_model,
                                                       monkeypatch) -> None:
    config, results, _ = first_run
    spy = Spy(mb.score_items)
    monkeypatch.setattr(mb, "score_items", spy)
    monkeypatch.setattr(mb, "caa_vector", lambda *a, **k: pytest.fail("vector recomputed"))
    monkeypatch.setattr(mb, "next_token_accuracy", lambda *a, **k: pytest.fail("tax rerun"))
    monkeypatch.setattr(mb, "choose", _fixed_pick)  # as in first_run
    again = mb.run(config, model=tiny_model, progress=False)
    assert spy.calls == []
    assert _without_timings(again) == _without_timings(results)


def test_interrupted_run_keeps_finished_cells(tiny_model, tmp_path, monkeypatch) -> None:
    config = tiny_config(tmp_path, behaviours=(ALPHA,), grid_layers=(1,),
                         combined_variants=("sum",), scales=(1.0,), tax_corpus="none")
    monkeypatch.setattr(mb, "score_items", Spy(mb.score_items, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        mb.run(config, model=tiny_model, progress=False)
    saved = json.loads((tmp_path / mb.RESULTS_FILE).read_text())
    assert len(saved["cells"]) == 3
    spy = Spy(mb.score_items.real)  # type: ignore[attr-defined]
    monkeypatch.setattr(mb, "score_items", spy)
    results = mb.run(config, model=tiny_model, progress=False)
    done = {desc for desc, _ in spy.calls}
    assert not done & set(saved["cells"])
    assert len(results["cells"]) == 3 + sum(len(plans) for _, plans in spy.calls)


def test_grid_stops_at_first_failed_cell(tiny_model, tmp_path, monkeypatch) -> None:
    config = tiny_config(tmp_path, behaviours=(ALPHA,), combined_variants=("sum",),
                         scales=(1.0,), tax_corpus="none")
    monkeypatch.setattr(mb, "_is_failed", lambda cell, cfg, share=0.0: "collapse")
    results = mb.run(config, model=tiny_model, progress=False)
    grid = [k for k in results["cells"] if k.startswith("grid/")]
    # per layer and direction only the innermost multiplier is tried
    assert sorted(grid) == sorted(f"grid/alpha/L{layer}/{m}" for layer in (1, 2)
                                  for m in ("-1", "+1"))
    assert results["chosen"]["alpha"] == {"subtract": None, "add": None}
    assert results["coefficients"]["alpha"] == 1.0  # fallback: smallest positive
    assert not any(k.startswith("individual/") for k in results["cells"])


def test_failure_rules() -> None:
    config = mb.MultiBehaviourConfig(max_top_share=0.95, max_faulty=0.2)

    def cell(share: float, faulty: float) -> dict:
        return {"top_answer_share": share, "faulty_rate": {"value": faulty}}

    assert mb._is_failed(cell(0.9, 0.1), config, 0.6) is None
    assert mb._is_failed(cell(0.97, 0.0), config, 0.6) == "collapse"
    assert mb._is_failed(cell(0.5, 0.25), config, 0.6) == "faulty"
    # an unsteered model that always answers the same cannot show collapse
    assert mb._is_failed(cell(1.0, 0.0), config, 1.0) is None
    assert mb._is_failed(cell(1.0, 0.5), config, 1.0) == "faulty"


def test_cell_made_by_another_plan_is_rescored(first_run, tiny_model, tmp_path,
                                               monkeypatch) -> None:
    config, results, _ = first_run
    import shutil

    shutil.copytree(config.out_dir, tmp_path / "copy")
    copy = replace(config, out_dir=str(tmp_path / "copy"))
    path = tmp_path / "copy" / mb.RESULTS_FILE
    saved = json.loads(path.read_text())
    saved["cells"]["simultaneous/-1/beta"]["plan"] = "an older plan"
    path.write_text(json.dumps(saved))
    spy = Spy(mb.score_items)
    monkeypatch.setattr(mb, "score_items", spy)
    monkeypatch.setattr(mb, "choose", _fixed_pick)  # as in first_run
    again = mb.run(copy, model=tiny_model, progress=False)
    assert [desc for desc, _ in spy.calls] == ["simultaneous/-1/beta"]
    assert again["cells"]["simultaneous/-1/beta"] == results["cells"]["simultaneous/-1/beta"]


def test_choose_picks_largest_effect_without_failed() -> None:
    def cell(m, rate, p=0.5, failed=None):
        return {"layer": 3, "multiplier": m, "matching_rate": {"value": rate},
                "p_matching": {"value": p}, "failed": failed}

    grid = {"a": cell(1.0, 0.6), "b": cell(2.0, 0.7), "c": cell(4.0, 0.9, failed="collapse"),
            "d": cell(-1.0, 0.4), "e": cell(-2.0, 0.4, p=0.3)}
    assert (mb.choose(grid, 0.5, 1) or {}).get("multiplier") == 2.0
    assert (mb.choose(grid, 0.5, -1) or {}).get("multiplier") == -2.0  # tie broken by P(matching)
    assert mb.choose({"c": grid["c"]}, 0.5, 1) is None


def test_choose_ignores_cells_that_move_the_wrong_way() -> None:
    def cell(m, rate, p):
        return {"layer": 3, "multiplier": m, "matching_rate": {"value": rate},
                "p_matching": {"value": p}, "failed": None}

    backwards = {"a": cell(1.0, 0.40, 0.45), "b": cell(2.0, 0.30, 0.40)}
    assert mb.choose(backwards, 0.5, 1, default_p=0.5) is None
    # Matching rate unchanged: P(matching) decides whether the cell helps.
    flat = {"a": cell(1.0, 0.5, 0.55), "b": cell(2.0, 0.5, 0.45)}
    assert (mb.choose(flat, 0.5, 1, default_p=0.5) or {}).get("multiplier") == 1.0
    assert (mb.choose(flat, 0.5, -1, default_p=0.5)) is None  # no negative cells at all
    assert mb.choose({"n": cell(-1.0, 0.5, 0.45)}, 0.5, -1, default_p=0.5)["multiplier"] == -1.0


def test_summary_table_and_figures(first_run, tmp_path) -> None:
    _, results, _ = first_run
    table = mb.summary_table(results)
    for text in ("alpha", "beta", "matching rate", "P(matching)", "alignment tax"):
        assert text in table
    default = results["cells"]["default/alpha/test"]["matching_rate"]["value"]
    assert f"{default:.2f}" in table.splitlines()[3]
    paths = write_figures(results, tmp_path)
    assert [p.name for p in paths] == ["individual_vs_combined.html", "simultaneous.html",
                                       "alignment_tax.html"]
    for path in paths:
        html = path.read_text()
        # Offline: plotly.js is loaded from the shared file beside the figures, no CDN.
        assert 'src="https://cdn' not in html and 'src="plotly.min.js"' in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


def test_split_equals_paper_shuffle(behaviour_dir) -> None:
    config = mb.MultiBehaviourConfig(behaviours=("myopia", "agreeableness"),
                                     data_dir=str(behaviour_dir))
    datasets = mb.load_datasets(config)
    for name, filename in (("myopia", "myopic.json"), ("agreeableness", "agreeableness.json")):
        raw = json.loads((behaviour_dir / filename).read_text())
        random.seed(13)
        random.shuffle(raw)
        split = mb.split_dataset(datasets[name], config)
        assert split.sizes == (500, 200, len(raw) - 700)
        for part, rows in ((split.vector, raw[:500]), (split.grid, raw[500:700]),
                           (split.test, raw[700:])):
            assert [i.raw_prompt or i.paper_prompt() for i in part] == [
                r["question"] for r in rows]
            assert [i.matching for i in part] == [r["answer_matching_behavior"].strip()
                                                  for r in rows]


def test_builtins_when_no_shared_data(monkeypatch) -> None:
    monkeypatch.setattr(mb, "default_data_dir", lambda: None)
    datasets = mb.load_datasets(mb.profile("quick"))
    assert datasets["myopia"].source == "builtin:myopia"
    assert mb.split_dataset(datasets["wealth_seeking"], mb.profile("quick")).sizes == (
        32, 16, 24)


def test_config_json_round_trip() -> None:
    for config in (mb.profile("quick"), mb.profile("paper"),
                   mb.MultiBehaviourConfig(simultaneous_layers={"myopia": 3,
                                                                "wealth_seeking": 4})):
        text = json.dumps(config.to_dict())
        assert mb.MultiBehaviourConfig.from_dict(json.loads(text)) == config


@pytest.mark.parametrize(("overrides", "message"), [
    ({"backend": "onnx"}, "backend='onnx'"),
    ({"prompt_format": "llama"}, "prompt_format='llama'"),
    ({"behaviours": ()}, "behaviours=()"),
    ({"n_grid": 0}, "n_grid=0"),
    ({"grid_multipliers": (1.0, 2.0)}, "negative and one positive"),
    ({"grid_multipliers": (-1.0, 0.0, 1.0)}, "non-zero"),
    ({"max_faulty": 1.5}, "max_faulty=1.5"),
    ({"combined_variants": ("median",)}, "median"),
    ({"simultaneous_layers": {"myopia": 3}}, "wealth_seeking"),
    ({"scales": (float("nan"),)}, "scales"),
    ({"batch_size": 0}, "batch_size=0"),
])
def test_config_validation(overrides, message) -> None:
    with pytest.raises(mb.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mb.MultiBehaviourConfig(**overrides)


def test_config_unknown_key_and_profile() -> None:
    with pytest.raises(mb.ConfigError, match="unknown config keys \\['layerz'\\]"):
        mb.MultiBehaviourConfig.from_dict({"layerz": 3})
    with pytest.raises(mb.ConfigError, match="unknown profile 'fast'"):
        mb.profile("fast")


def test_layer_outside_model_errors(tiny_model, tmp_path) -> None:
    with pytest.raises(mb.ConfigError, match=r"grid layer 9 .* 4 layers"):
        mb.run(tiny_config(tmp_path, grid_layers=(9,)), model=tiny_model, progress=False)


def test_malformed_jsonl_in_config_errors_clearly(tmp_path) -> None:
    bad = tmp_path / "broken.jsonl"
    good = json.dumps({"question": "Q?\n\nChoices:\n (A) x\n (B) y",
                       "answer_matching_behavior": " (A)",
                       "answer_not_matching_behavior": " (B)"})
    bad.write_text(good + "\n{not json\n")
    config = mb.MultiBehaviourConfig(behaviours=(str(bad),))
    with pytest.raises(DatasetFormatError, match="line 2"):
        mb.load_datasets(config)
    with pytest.raises(FileNotFoundError, match="data_dir='/nowhere'"):
        mb.load_datasets(mb.MultiBehaviourConfig(data_dir="/nowhere"))


def test_too_few_items_errors() -> None:
    dataset = load_builtin("myopia")
    with pytest.raises(mb.ConfigError, match="72 items"):
        mb.split_dataset(dataset, mb.MultiBehaviourConfig(n_vector=60, n_grid=10, n_test=10))


def test_scale_layer() -> None:
    assert [mb.scale_layer(x, 30) for x in (11, 12, 13, 14, 15)] == [10, 11, 12, 13, 14]
    assert mb.scale_layer(15, 32) == 15


@pytest.mark.slow
def test_reduced_run_on_smol(smol, tmp_path) -> None:
    config = mb.MultiBehaviourConfig(
        behaviours=("myopia",), n_vector=20, n_grid=20, n_test=20,
        grid_layers=(8, 14), grid_multipliers=(-4.0, 4.0), combined_variants=("mean",),
        scales=(1.0,), tax_corpus="builtin", tax_documents=2, tax_max_tokens=64,
        n_resamples=100, out_dir=str(tmp_path))
    results = mb.run(config, model=smol, progress=False)
    default = results["cells"]["default/myopia/test"]
    # the embedded model answers with a valid letter unsteered (NOTES: faulty ~0)
    assert default["counts"]["faulty"] <= 2
    # Whatever was chosen moved the behaviour the intended way on the grid split (on this
    # small model a direction may have no such multiplier: then nothing is chosen).
    grid_default = results["cells"]["default/myopia/grid"]
    for which, sign in (("subtract", -1), ("add", 1)):
        pick = results["chosen"]["myopia"][which]
        if pick is not None:
            assert sign * pick["multiplier"] > 0
            moved = (sign * (pick["grid_matching_rate"] - grid_default["matching_rate"]["value"]),
                     sign * (pick["grid_p_matching"] - grid_default["p_matching"]["value"]))
            assert moved[0] > 0 or (moved[0] == 0 and moved[1] > 0), (which, pick)
    assert {"combined/mean/add/myopia", "simultaneous/+1/myopia", "tax/+1"} <= set(
        results["cells"])
    assert "myopia" in mb.summary_table(results)


def test_vector_meta_dataset_label(first_run) -> None:
    config, _, _ = first_run
    vector = SteeringVector.load(Path(config.out_dir) / "vectors" / "alpha.safetensors")
    assert isinstance(vector.meta, VectorMeta) and vector.meta.dataset == "alpha"
    assert vector.meta.n_items == config.n_vector


def _synthetic_results() -> dict:
    def cell(rate: float, p: float, **extra) -> dict:
        return {"matching_rate": {"value": rate}, "p_matching": {"value": p}, **extra}

    return {
        "config": {"combined_variants": ["weighted_mean"]}, "behaviours": ["b"],
        "cells": {
            "default/b/grid": cell(0.5, 0.5),
            "grid/b/L3/-2": cell(0.3, 0.3, multiplier=-2.0),
            "grid/b/L3/+2": cell(0.7, 0.7, multiplier=2.0),
            "grid/b/L4/+4": cell(0.5, 0.9, multiplier=4.0),
            "default/b/test": cell(0.4, 0.4),
            "individual/b/add": cell(0.6, 0.6),
            "combined/weighted_mean/add/b": cell(0.5, 0.5),
            "simultaneous/+1/b": cell(0.4, 0.4),
        }}


def test_steerability_slopes_on_synthetic_grid() -> None:
    slopes = mb.steerability_slopes(_synthetic_results())
    assert slopes["b"]["L3"] == pytest.approx(0.1)  # (0.3, 0.5, 0.7) at (-2, 0, 2)
    assert slopes["b"]["L4"] == pytest.approx(0.1)  # (0.5 at 0, 0.9 at 4)


def test_interference_shares() -> None:
    row = mb.interference(_synthetic_results())["b"]
    assert row["individual"] == pytest.approx(0.2)
    assert row["combined_share"] == pytest.approx(0.5)
    assert row["simultaneous_share"] == pytest.approx(0.0)


def test_best_simultaneous_scale_skips_scales_with_faulty_answers() -> None:
    def cell(p: float, faulty: float) -> dict:
        return {"p_matching": {"value": p}, "faulty_rate": {"value": faulty}}

    results = {"config": {"max_faulty": 0.2}, "cells": {
        "simultaneous/-2/alpha": cell(0.9, 1.0),   # highest P, but the model stopped answering
        "simultaneous/1/alpha": cell(0.6, 0.1),
        "simultaneous/2/alpha": cell(0.55, 0.0),
        "simultaneous/1/beta": cell(0.7, 0.5)}}
    assert mb._best_simultaneous(results, "alpha")[0] == 1.0
    assert mb._best_simultaneous(results, "beta") == (None, None)


def test_weighted_combined_plans_describe_their_weights(first_run) -> None:
    config, _, _ = first_run
    vectors = {b: SteeringVector.load(Path(config.out_dir) / "vectors" / f"{b}.safetensors")
               for b in ("alpha", "beta")}
    one = mb.combined_plan(vectors, 2, "weighted_mean", {"alpha": 1.0, "beta": 4.0}, 1.0)
    other = mb.combined_plan(vectors, 2, "weighted_mean", {"alpha": 8.0, "beta": 0.5}, 1.0)
    assert one.describe() != other.describe()
    assert "4*beta" in one.describe() and "8*alpha" in other.describe()


def test_other_data_with_the_same_config_is_not_resumed(tiny_model, tmp_path,
                                                        monkeypatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    alpha = _write_behaviour(data / "alpha.jsonl", 20, 0)
    config = tiny_config(tmp_path / "out", behaviours=(alpha,), grid_layers=(1,),
                         combined_variants=("sum",), scales=(1.0,), tax_corpus="none",
                         simultaneous_layers={"alpha": 1})
    mb.run(config, model=tiny_model, progress=False)
    _write_behaviour(data / "alpha.jsonl", 20, 7)  # same path and size, other answers
    with pytest.raises(ResultConfigMismatchError, match="data"):
        mb.run(config, model=tiny_model, progress=False)
    (tmp_path / "out" / mb.RESULTS_FILE).unlink()  # start again: the vector must be rebuilt
    extracted: list[str] = []
    real = mb.caa_vector
    monkeypatch.setattr(mb, "caa_vector",
                        lambda *a, **k: extracted.append(k["dataset"]) or real(*a, **k))
    mb.run(config, model=tiny_model, progress=False)
    assert extracted == ["alpha"]


def test_behaviour_aliases_and_duplicates() -> None:
    assert mb.behaviour_key("myopic") == "myopia"
    assert mb.behaviour_key("Wealth Seeking") == "wealth_seeking"
    assert mb.behaviour_key("/x/myopic.json") == "myopia"
    with pytest.raises(mb.ConfigError, match=r"behaviours=.*appear once"):
        mb.MultiBehaviourConfig(behaviours=("myopia", "myopic"))


def test_tax_corpus_is_checked_before_any_work() -> None:
    with pytest.raises(mb.ConfigError, match=r"tax_corpus='wikitxt' is invalid.*wikitext"):
        mb.MultiBehaviourConfig(tax_corpus="wikitxt")


def test_explicit_data_dir_never_falls_back_to_builtins(tmp_path) -> None:
    config = mb.MultiBehaviourConfig(behaviours=("myopia",), data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"myopic\.json"):
        mb.load_datasets(config)


def test_profile_names_unknown_overrides_and_the_valid_fields() -> None:
    with pytest.raises(mb.ConfigError, match=r"unknown config keys \['layerz'\].*grid_layers"):
        mb.profile("quick", layerz=3)
    with pytest.raises(mb.ConfigError, match=r"no layer for \['beta'\]"):
        mb.MultiBehaviourConfig(behaviours=("alpha", "beta"), simultaneous_layers={"alpha": 1})
    with pytest.raises(mb.ConfigError, match=r"bad layer for \{'alpha': -1\}"):
        mb.MultiBehaviourConfig(behaviours=("alpha",), simultaneous_layers={"alpha": -1})
