"""The expressed-behaviour comparison: its plans isolate one difference each, its config
refuses bad values, and a run on the tiny model stores, resumes and reports."""

from __future__ import annotations

import pytest
import torch
from recording import Recording

from actsteer.data.expressed import (
    EXPRESSED_BEHAVIOURS,
    contexts,
    load_expressed,
    neutral_prompts,
)
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
    with pytest.raises(ValueError, match="no built-in expressed behaviour 'anger'"):
        expressed.ExpressedConfig(behaviours=("sentiment", "anger"))


def _behaviour_file(folder, name="gardening", **changes):
    """A behaviour the project has never seen, written as a behaviour file."""
    import json

    data = {"name": name, "description": "gardens rather than offices",
            "completions": [
                {"context": "I woke up early on Saturday.",
                 "behaviour": " I planted tomatoes in the garden.",
                 "contrast": " I answered emails at the office."},
                {"context": "My neighbour knocked on the door.",
                 "behaviour": " He brought seeds for the flower beds.",
                 "contrast": " He brought a folder of invoices."}],
            "words": {"behaviour": ["garden", "seeds"], "contrast": ["office", "email"]},
            **changes}
    path = folder / f"{name}.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return path


def test_a_behaviour_file_loads_like_a_built_in(tmp_path) -> None:
    path = _behaviour_file(tmp_path, instruction="Talk about your garden.")
    garden = load_expressed(path)
    assert garden.name == "gardening" and garden.source == str(path) and len(garden) == 2
    assert garden.pairs()[1].positive == " He brought seeds for the flower beds."
    assert garden.words.behaviour == ("garden", "seeds")
    assert garden.instruction == "Talk about your garden."
    assert garden.prompts == neutral_prompts()
    assert load_expressed(str(path)) == garden
    assert _behaviour_file(tmp_path, name="bare") and load_expressed(
        tmp_path / "bare.json").instruction is None


def test_every_built_in_behaviour_asks_for_itself_without_its_own_words() -> None:
    import re

    for name in EXPRESSED_BEHAVIOURS:
        behaviour = load_expressed(name)
        assert behaviour.instruction, name
        # prompting must not win by copying: no measured word in the instruction
        said = set(re.findall(r"[a-z]+", behaviour.instruction.lower()))
        assert not said & {*behaviour.words.behaviour, *behaviour.words.contrast}, name


@pytest.mark.parametrize(("changes", "says"), [
    ({"words": None}, "field 'words' is missing"),
    ({"completions": [{"context": "a", "behaviour": " b"}, {}]}, "completions[0].contrast"),
    ({"words": {"behaviour": ["garden"], "contrast": []}}, "words.contrast"),
    ({"words": {"behaviour": ["garden"], "contrast": ["garden"]}}, "['garden'] on both"),
    ({"word": ["x"]}, "field(s) ['word']"),
    ({"name": "my behaviour"}, "'name' is 'my behaviour'"),
    ({"completions": [{"context": neutral_prompts()[0], "behaviour": " b", "contrast": " c"},
                      {"context": "d", "behaviour": " e", "contrast": " f"}]},
     "completions[0].context is one of the neutral prompts"),
])
def test_a_malformed_behaviour_file_is_refused_in_one_line(tmp_path, changes, says) -> None:
    path = _behaviour_file(tmp_path, **changes)
    with pytest.raises(ValueError) as error:
        load_expressed(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"behaviour file {path}: ")
    assert says in message


def test_a_file_that_is_not_one_json_object_is_refused(tmp_path) -> None:
    listed = tmp_path / "items.json"
    listed.write_text("[]")
    with pytest.raises(ValueError, match=f"behaviour file {listed} holds a JSON list"):
        load_expressed(listed)
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{name: 1")
    with pytest.raises(ValueError, match=f"behaviour file {garbled} is not JSON"):
        load_expressed(garbled)
    with pytest.raises(FileNotFoundError, match=r"behaviour file .*none\.json does not exist"):
        load_expressed(tmp_path / "none.json")


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
    ({"behaviours": ()}, "behaviours="),
    ({"behaviours": ("sentiment", "sentiment")}, "once"),
    ({"tax_corpus": "/no/such/text"}, "tax_corpus="),
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


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    config = expressed.ExpressedConfig(
        out_dir=str(tmp_path_factory.mktemp("expressed")), n_grid=6, n_test=10,
        candidate_layers=(1, 2, 3), generate_prompts=3, generate_tokens=4,
        behaviours=("sentiment", "wedding", "myopia"),
        steerability_fractions=(-0.15, 0.0, 0.15, 0.3), tax_corpus="builtin",
        tax_documents=3, tax_max_tokens=24, n_resamples=100)
    return config, mb.run_any(config, model=tiny_model, progress=False)


def test_a_run_stores_every_plan_and_reports_it(tiny_run) -> None:
    config, results = tiny_run
    assert results["kind"] == "expressed"
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
    from actsteer.paper.multi_behaviour.expressed.state import split_prompts
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
    counting = Recording()
    again = mb.run_any(config, model=tiny_model, progress=False, executor=counting)
    assert counting.keys == []
    assert mb.report_any(again) == mb.report_any(results)
    loaded = mb.load_any(results["path"])
    assert mb.report_any(loaded) == mb.report_any(results)


def _grid(results, name, layer):
    """The grid cell of ``name`` at ``layer``: every behaviour's per-prompt propensity."""
    return results["cells"][f"expressed-layers/behaviour={name}/layer={layer}"]["values"]


def test_own_layers_are_chosen_independently_and_the_combined_layer_by_the_same_rule(
        tiny_run) -> None:
    from actsteer.effects import paired_effect

    config, results = tiny_run
    base = _grid(results, "unsteered", -1)
    candidates = results["layers"]["candidates"]
    for name in config.behaviours:
        lows = {layer: paired_effect(_grid(results, name, layer)[name], base[name],
                                     n_resamples=100).low for layer in candidates}
        assert results["layers"]["own"][name] == max(lows, key=lows.get)  # no other's layer
    total = {layer: paired_effect(
        torch.tensor([_grid(results, "combined-sum", layer)[b] for b in config.behaviours]).sum(0),
        torch.tensor([base[b] for b in config.behaviours]).sum(0), n_resamples=100).low
        for layer in candidates}
    assert results["layers"]["combined"] == max(total, key=total.get)
    assert results["layers"]["combined_chosen"] and results["layers"]["paper"] == 2
    text = mb.report_any(results)
    assert "own layer chosen independently" in text and "combined vector: L" in text


def test_the_answer_names_the_layer_and_recipe_effects_with_intervals(tiny_run) -> None:
    import re

    from actsteer.effects import paired_effect

    config, results = tiny_run
    answer = mb.report_any(results).split("answer on this model")[1]
    words = {"moves": "{} more", "reversed": "{} more", "no effect": "no difference resolved"}
    for title, plan, against, sides in (
            ("layer effect", "simultaneous", "combined-sum", ("own layers", "one layer")),
            ("recipe effect", "combined-sum", "combined-mean",
             ("own coefficients", "the paper's mean"))):
        line = next(x for x in answer.splitlines() if x.strip().startswith(title))
        for name in config.behaviours:  # every behaviour, whether or not it moves alone
            cells = results["cells"]
            diff = (torch.tensor(cells[f"expressed-test/plan={plan}"]["values"][name])
                    - torch.tensor(cells[f"expressed-test/plan={against}"]["values"][name]))
            found = re.search(rf"{name} Δ ([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), "
                              rf"([+-]\d+\.\d\d)\] \(([^)]*)\)", line)
            assert found is not None, line
            value, low, high = (float(found.group(i)) for i in (1, 2, 3))
            assert value == pytest.approx(float(diff.mean()), abs=0.006)
            interval = paired_effect(diff, torch.zeros_like(diff), n_resamples=100)
            assert (low, high) == pytest.approx((interval.low, interval.high), abs=0.006)
            side = sides[0] if interval.verdict == "moves" else sides[1]
            assert found.group(4) == words[interval.verdict].format(side)


def test_coinciding_own_layers_get_the_labelled_distinct_variant(tiny_model, tmp_path) -> None:
    import json

    from actsteer.data import read_builtin

    builtin = json.loads(read_builtin("expressed.json"))
    entry = builtin["behaviours"]["sentiment"]
    twin = {"name": "sentiment_twin", "words": entry["words"],
            "completions": [{"context": c, **x} for c, x in zip(
                builtin["contexts"], entry["completions"], strict=True)]}
    path = tmp_path / "twin.json"
    path.write_text(json.dumps(twin))
    config = expressed.ExpressedConfig(
        out_dir=str(tmp_path / "out"), behaviours=("sentiment", str(path)), n_grid=4, n_test=6,
        candidate_layers=(1, 3), generate_prompts=0, tax_documents=2, tax_max_tokens=16,
        n_resamples=50)
    results = mb.run_any(config, model=tiny_model, progress=False)
    own, distinct = results["layers"]["own"], results["layers"]["distinct"]
    assert own["sentiment"] == own["sentiment_twin"]  # the same vector: the same best layer
    assert sorted(distinct.values()) == [1, 3]
    plan = results["plans"]["simultaneous-distinct"]
    assert "expressed-test/plan=simultaneous-distinct" in results["cells"]
    assert "blocks.1.hook_resid_post" in plan and "blocks.3.hook_resid_post" in plan
    text = mb.report_any(results)
    assert "own layers coincide" in text and "simultaneous (distinct layers, paper)" in text


def test_the_quick_numbers_do_not_depend_on_the_reference_data(tiny_model, tmp_path,
                                                               monkeypatch, caplog) -> None:
    from actsteer.paths import data_dir

    overrides = {"n_grid": 4, "n_test": 6, "candidate_layers": (1, 3), "generate_prompts": 0,
                 "tax_documents": 2, "tax_max_tokens": 16, "n_resamples": 50,
                 "behaviours": ("sentiment", "myopia")}
    reports = {}
    for seen in ("with", "without"):
        if seen == "without":
            empty = tmp_path / "no-data"
            (empty / "behaviours").mkdir(parents=True)
            monkeypatch.setenv("ACTSTEER_DATA_DIR", str(empty))
            assert data_dir("wikitext-2") is None
        config = mb.profile("quick", out_dir=str(tmp_path / seen), **overrides)
        caplog.clear()
        with caplog.at_level("INFO"):
            results = mb.run_any(config, model=tiny_model, progress=False)
        assert not [r for r in caplog.records if r.levelno >= 30], caplog.text
        assert results["corpus"].startswith("builtin") and results["norms"]["source"] == \
            results["corpus"]
        reports[seen] = (mb.report_any(results), results["norms"])
    assert reports["with"] == reports["without"]
