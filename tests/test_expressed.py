"""The expressed-behaviour comparison: its plans isolate one difference each, its config
refuses bad values, and a run on the tiny model stores, resumes and reports."""

from __future__ import annotations

import pytest
import torch

from actsteer.data.expressed import (
    EXPRESSED_BEHAVIOURS,
    contexts,
    load_expressed,
    neutral_prompts,
)
from actsteer.executor import LocalExecutor
from actsteer.norms import ResidualNorms
from actsteer.paper import multi_behaviour as mb
from actsteer.paper.common import ConfigError
from actsteer.paper.multi_behaviour import expressed
from actsteer.paper.multi_behaviour.expressed import analysis
from actsteer.paper.multi_behaviour.expressed.plans import combined_plan, comparison_plans
from actsteer.plan import simultaneous
from actsteer.steering import steer


def test_builtin_sets_are_complete_and_held_out() -> None:
    prompts = set(neutral_prompts())
    assert len(prompts) == len(neutral_prompts()) >= 72
    for name in EXPRESSED_BEHAVIOURS:
        behaviour = load_expressed(name)
        assert len(behaviour) == len(contexts()) == 16
        assert all(p.prompt not in prompts for p in behaviour.pairs())
        assert not set(behaviour.words.behaviour) & set(behaviour.words.contrast)
    with pytest.raises(ValueError, match="no built-in expressed behaviour 'anger'"):
        load_expressed("anger")


@pytest.fixture(scope="module")
def three(vectors):
    first, second = vectors
    return {"a": first, "b": second, "c": first * -0.5 + second}


def test_combined_sum_is_simultaneous_at_one_layer(tiny_model, three) -> None:
    norms = ResidualNorms("resid_post", {1: 10.0, 2: 20.0, 3: 30.0}, 100)
    same = {"a": 2, "b": 2, "c": 2}
    plans = comparison_plans(three, same, 2, 0.15, norms, ("sum", "mean", "weighted_mean"))
    tokens = torch.tensor([[1, 5, 9, 11, 2]])
    with steer(tiny_model, plans["combined-sum"]):
        one = tiny_model(tokens)
    with steer(tiny_model, plans["simultaneous"]):
        many = tiny_model(tokens)
    torch.testing.assert_close(one, many, atol=1e-5, rtol=0)
    # matched total strength: the paper's recipes have the sum's norm, not its direction
    total = plans["combined-sum"].injections[0].delta.norm()
    for recipe in ("mean", "weighted_mean"):
        delta = plans[f"combined-{recipe}"].injections[0].delta
        assert float(delta.norm()) == pytest.approx(float(total), rel=1e-5)
        assert plans[f"combined-{recipe}"].injections[0].fraction == pytest.approx(
            float(total) / 20.0, rel=1e-5)
    assert not torch.allclose(plans["combined-mean"].injections[0].delta,
                              plans["combined-sum"].injections[0].delta, atol=1e-3)


def test_each_behaviour_gets_its_fraction_in_every_plan(three) -> None:
    norms = ResidualNorms("resid_post", {1: 10.0, 2: 20.0, 3: 30.0}, 100)
    own = {"a": 1, "b": 3, "c": 2}
    plans = comparison_plans(three, own, 2, 0.15, norms, ("sum",))
    for injection in plans["simultaneous"].injections:
        assert injection.layer == own[injection.label]
        assert float(injection.delta.norm()) == pytest.approx(0.15 * norms.median(
            injection.layer), rel=1e-5)
    for name in three:
        at_own = plans[f"individual:{name}"].injections[0]
        assert float(at_own.delta.norm()) == pytest.approx(0.15 * norms.median(own[name]),
                                                           rel=1e-5)
        assert plans[f"-individual:{name}"].injections[0].fraction == pytest.approx(-0.15)
    spec = {n: (v, own[n], 0.15) for n, v in three.items()}
    assert plans["simultaneous"].identity() == simultaneous(spec, norms=norms).identity()
    with pytest.raises(ValueError, match="unknown combined recipe"):
        combined_plan(three, own, 2, 0.15, norms, "median")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"behaviours": ("anger",)}, "behaviours="),
    ({"behaviours": ("sentiment", "sentiment")}, "once"),
    ({"fraction": 0.0}, "fraction=0.0"),
    ({"fraction": 2.0}, "fraction=2.0"),
    ({"steerability_fractions": (-0.1, 0.1)}, "including 0"),
    ({"combined_recipes": ("median",)}, "combined_recipes"),
    ({"candidate_layers": 14}, "candidate_layers=14"),
    ({"n_grid": 60, "n_test": 60}, "n_grid \\+ n_test"),
    ({"generate_prompts": 99}, "generate_prompts=99"),
])
def test_config_refuses_bad_values(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        expressed.ExpressedConfig(**overrides)


def test_quick_profile_is_the_expressed_comparison_and_round_trips() -> None:
    import json

    quick = mb.profile("quick", fraction=0.1, **{"model.dtype": "bf16"})
    assert isinstance(quick, expressed.ExpressedConfig)
    assert quick.fraction == 0.1 and quick.model.dtype == "bf16"
    again = expressed.ExpressedConfig.from_dict(json.loads(json.dumps(quick.to_dict())))
    assert again == quick
    assert quick.results_config()["kind"] == "expressed"


class Counting(LocalExecutor):
    """A local executor that counts the units it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.units: list[str] = []

    def map(self, units):
        self.units += [u.key for u in units]
        return super().map(units)


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    config = expressed.ExpressedConfig(
        out_dir=str(tmp_path_factory.mktemp("expressed")), n_grid=6, n_test=10,
        candidate_layers=(1, 2, 3), combined_layer=2, generate_prompts=3, generate_tokens=4,
        steerability_fractions=(-0.15, 0.0, 0.15, 0.3), tax_corpus="builtin",
        tax_documents=3, tax_max_tokens=24, n_resamples=100)
    return config, mb.run_any(config, model=tiny_model, progress=False)


def test_a_run_stores_every_plan_and_reports_it(tiny_run) -> None:
    config, results = tiny_run
    assert results["kind"] == "expressed"
    own = results["layers"]["own"]
    assert len(set(own.values())) == len(own) == 3  # distinct own layers
    for plan in ("unsteered", "simultaneous", "combined-sum", "combined-mean",
                 "individual:sentiment", "steer:myopia:+0.3"):
        cell = results["cells"][f"expressed-test/plan={plan}"]
        assert set(cell["values"]) == set(config.behaviours)
        assert len(cell["values"]["wedding"]) == config.n_test
    assert not any("steer:myopia:-0.15" in key or "steer:myopia:+0.15" in key
                   for key in results["cells"])  # the individual plans are those rungs
    slope = analysis.steerability(results, "myopia")
    ladder = torch.stack([torch.tensor(results["cells"][f"expressed-test/plan={plan}"][
        "values"]["myopia"]) for plan in ("-individual:myopia", "unsteered",
                                          "individual:myopia", "steer:myopia:+0.3")])
    # least squares by hand: sum((x - mean x)(y - mean y)) / sum((x - mean x)^2) per prompt
    x = torch.tensor([-0.15, 0.0, 0.15, 0.3], dtype=torch.float64)[:, None]
    by_hand = (((x - x.mean()) * (ladder - ladder.mean(0))).sum(0)
               / ((x - x.mean()) ** 2).sum())
    assert slope is not None and slope.mean_slope.value == pytest.approx(float(by_hand.mean()))
    # a plan against itself: no effect, exactly
    same = analysis.effect(results, "simultaneous", "myopia", against="simultaneous")
    assert same is not None and same.value == 0 and same.low == same.high == 0
    effect = analysis.effect(results, "simultaneous", "sentiment")
    base = torch.tensor(results["cells"]["expressed-test/plan=unsteered"]["values"]["sentiment"])
    steered = torch.tensor(results["cells"]["expressed-test/plan=simultaneous"]["values"][
        "sentiment"])
    assert effect is not None and effect.value == pytest.approx(float((steered - base).mean()))
    text = mb.report_any(results)
    for heading in ("each behaviour alone", "cross-talk", "the paper's question",
                    "what separates them", "cost: perplexity", "VADER", "answer on this model"):
        assert heading in text
    figures = mb.write_figures(results, tiny_run[0].out_dir + "/figures")
    assert {f.name for f in figures} == {"comparison.html", "cross_talk.html", "layers.html"}


def test_cells_hold_the_propensities_of_a_direct_measurement_and_the_counted_words(
        tiny_run, tiny_model) -> None:
    from actsteer.likelihood import word_propensities
    from actsteer.paper.multi_behaviour.expressed.stages import split_prompts
    from actsteer.plan import empty_plan

    config, results = tiny_run
    cell = results["cells"]["expressed-test/plan=unsteered"]
    sets = [load_expressed(name).words for name in config.behaviours]
    direct = word_propensities(tiny_model, split_prompts(config)["test"], sets, [empty_plan()])
    vocab = tiny_model.tokenizer.get_vocab()
    for words in sets:
        assert cell["values"][words.name] == pytest.approx(
            direct[words.name].summed[0].tolist(), abs=1e-4)
        # counted: the words that are one vocabulary entry after a space (Ġ), in order
        assert cell["words"][words.name] == {
            side: [w for w in getattr(words, side) if "Ġ" + w in vocab]
            for side in ("behaviour", "contrast")}


def test_a_rerun_scores_nothing_and_reloads_the_same_report(tiny_run, tiny_model) -> None:
    config, results = tiny_run
    counting = Counting()
    again = mb.run_any(config, model=tiny_model, progress=False, executor=counting)
    assert counting.units == []
    assert mb.report_any(again) == mb.report_any(results)
    loaded = mb.load_any(results["path"])
    assert mb.report_any(loaded) == mb.report_any(results)
