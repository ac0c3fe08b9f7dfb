"""Surgery compared with steering: matching, the arms, and the comparison end to end.

The fast tests run the whole comparison on the tiny random Llama (its numbers mean
nothing, but each must be what it claims: a strength-0 edit is the unedited model, a
steering plan has the asked share of the residual norm, matched strengths follow from the
ladder's effects); the slow test checks on the embedded model that the comparison's sign
conventions make sentiment move the intended way.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from actsteer.accuracy import Documents
from actsteer.batching import encode_many
from actsteer.data.corpora import builtin_text_corpus
from actsteer.data.expressed import load_expressed, neutral_prompts
from actsteer.effects import paired_effect
from actsteer.errors import ActsteerError, InvalidValueError
from actsteer.likelihood import word_propensities
from actsteer.norms import residual_norms
from actsteer.paper.surgery_vs_steering.arms import (
    AUTHORS_SHARE,
    SteeringArm,
    SurgeryArm,
    build_arms,
    default_k,
    score_points,
)
from actsteer.paper.surgery_vs_steering.compare import (
    compare,
    generation_throughput,
    vader_compound,
)
from actsteer.paper.surgery_vs_steering.matching import common_target, matched_strength
from actsteer.surgery import select_region

SENTIMENT = load_expressed("sentiment")
PROMPTS = list(neutral_prompts())[:6]


# -- matching ---------------------------------------------------------------------------

def test_matched_strength_hits_the_target_on_a_monotone_ladder():
    strengths = [0.0, 0.1, 0.25, 0.5]
    effects = [0.0, 0.8, 2.0, 2.6]
    for target in (0.4, 0.8, 1.4, 2.3, 2.6):
        found = matched_strength(strengths, effects, target)
        assert found is not None
        # the interpolated ladder at the found strength is the target
        assert _interpolate(strengths, effects, found) == pytest.approx(target)
    assert matched_strength(strengths, effects, 0.4) == pytest.approx(0.05)
    assert matched_strength(strengths, effects, 1.4) == pytest.approx(0.175)
    assert matched_strength(strengths, effects, 2.6) == pytest.approx(0.5)


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError(f"{x} is outside the ladder")


def test_matched_strength_takes_the_first_crossing_and_never_extrapolates():
    # not monotone: up to 1.5, back to 0.5, up to 3.0 -> the first crossing of 1.0
    assert matched_strength([0, 1, 2, 3], [0.0, 1.5, 0.5, 3.0], 1.0) == pytest.approx(2 / 3)
    assert matched_strength([0, 1, 2], [0.0, 0.3, 0.9], 1.0) is None
    assert matched_strength([0, 1, 2], [0.0, -0.5, -1.0], 1.0) is None


@pytest.mark.parametrize(("strengths", "effects", "target", "message"), [
    ([0.0, 1.0], [0.0], 1.0, "at least two"),
    ([0.0, 1.0, 1.0], [0.0, 1.0, 2.0], 1.0, "ascending"),
    ([0.0, 1.0], [0.0, float("nan")], 1.0, "finite"),
    ([0.0, 1.0], [0.0, 2.0], 0.0, "positive"),
    ([0.0, 1.0], [0.0, 2.0], -1.0, "positive"),
])
def test_bad_ladders_name_the_problem(strengths, effects, target, message):
    with pytest.raises(InvalidValueError, match=message):
        matched_strength(strengths, effects, target)


def test_common_target_is_the_weakest_moving_arms_reach():
    assert common_target({"a": 2.0, "b": 0.7, "c": None}) == 0.7
    assert common_target({"a": None, "b": None}) is None
    assert common_target({}) is None


# -- the arms ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def norms(tiny_model):
    return residual_norms(tiny_model, builtin_text_corpus().texts()[:3], max_tokens=32)


@pytest.fixture(scope="module")
def arms(tiny_model, norms):
    return build_arms(tiny_model, SENTIMENT.pairs()[:6], layer=2, norms=norms, control=True)


def test_steering_arms_add_the_asked_share_of_the_residual_norm(arms, norms):
    for name in ("steer:probe", "steer:caa"):
        arm = arms.arms[name]
        assert isinstance(arm, SteeringArm)
        for fraction in (0.1, 0.25, -0.3):
            (injection,) = arm.plan(fraction).injections
            assert injection.layer == 2 and injection.fraction == fraction
            assert float(injection.delta.double().norm()) == pytest.approx(
                abs(fraction) * norms.median(2), rel=1e-5)
            assert torch.sign(torch.dot(injection.delta, arm.vector)) == math.copysign(1, fraction)
    probe = arms.arms["steer:probe"]
    assert torch.equal(probe.vector, arms.probe.direction)  # direction +1: the probe itself
    cosine = torch.nn.functional.cosine_similarity(arms.arms["steer:caa"].vector, arms.vector,
                                                   dim=0)
    assert float(cosine) == pytest.approx(1.0)


def test_surgery_arm_removes_the_other_side_to_raise_the_behaviour(tiny_model, arms, norms):
    surgery_arm = arms.arms["surgery"]
    assert isinstance(surgery_arm, SurgeryArm)
    # to raise the behaviour, the paper's surgery removes the contrast: the flipped probe
    assert torch.equal(surgery_arm.edit.direction, -arms.probe.direction)
    assert dict(surgery_arm.edit.rows) == dict(arms.region.rows)
    expected = select_region(tiny_model, arms.probe.flipped(), k=default_k(tiny_model),
                             per="all")
    assert dict(expected.rows) == dict(arms.region.rows)
    assert arms.region.n_rows == default_k(tiny_model) == round(AUTHORS_SHARE * 4 * 128)
    lower = build_arms(tiny_model, SENTIMENT.pairs()[:6], layer=2, norms=norms, direction=-1)
    assert torch.equal(lower.arms["surgery"].edit.direction, lower.probe.direction)
    assert torch.equal(lower.arms["steer:probe"].vector, -lower.probe.direction)
    control = arms.arms["surgery:random"]
    assert isinstance(control, SurgeryArm) and control.edit.n_rows == arms.region.n_rows
    assert abs(float(torch.dot(control.edit.direction, arms.probe.direction))) < 0.9


def test_strength_zero_gives_exactly_zero_effect(tiny_model, arms):
    words = SENTIMENT.words

    def measure(plans):
        return list(word_propensities(tiny_model, PROMPTS, [words], plans)[words.name].summed)

    points = [(arms.arms["surgery"], 0.0), (arms.arms["steer:caa"], 0.0),
              (arms.arms["surgery"], 3.0)]
    base, edit_zero, steer_zero, edit_three = score_points(tiny_model, points, measure)
    for values in (edit_zero, steer_zero):
        assert torch.equal(values, base)
        effect = paired_effect(values, base)
        assert (effect.value, effect.low, effect.high) == (0.0, 0.0, 0.0)
    assert not torch.equal(edit_three, base)  # the edit reaches the measurement
    # ... and is gone afterwards
    again = measure([arms.arms["steer:caa"].plan(0.0)])[0]
    assert torch.equal(again, base)


def test_surgery_arm_applies_the_edit_only_inside(tiny_model, arms):
    tokens = torch.tensor([encode_many(tiny_model, ["The weather was"])[0]])
    with torch.no_grad():
        plain = tiny_model(tokens)
        with arms.arms["surgery"].applied(tiny_model, 5.0) as plan:
            assert not plan.injections
            edited = tiny_model(tokens)
        after = tiny_model(tokens)
    assert not torch.equal(edited, plain)
    assert torch.equal(after, plain)


def test_bad_arm_requests_are_refused(tiny_model, norms):
    with pytest.raises(InvalidValueError, match="direction"):
        build_arms(tiny_model, SENTIMENT.pairs()[:4], layer=2, norms=norms, direction=2)
    with pytest.raises(InvalidValueError, match="at least 2"):
        build_arms(tiny_model, SENTIMENT.pairs()[:1], layer=2, norms=norms)


# -- the comparison -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def lower_arms(tiny_model, norms):
    # direction -1 because on this random model some arms lower the propensity at these
    # ladders, so the matched path runs (test_matched_strengths_follow_from_the_ladders)
    return build_arms(tiny_model, SENTIMENT.pairs()[:6], layer=2, norms=norms, control=True,
                      direction=-1)


@pytest.fixture(scope="module")
def result(tiny_model, lower_arms):
    arms = lower_arms
    documents = Documents.build(tiny_model, [ids[:24] for ids in encode_many(
        tiny_model, builtin_text_corpus().texts()[:2])], batch_size=2)
    ladders = {"steer:probe": (0.5, 1.0), "steer:caa": (0.5, 1.0), "surgery": (4.0, 8.0),
               "surgery:random": (8.0,)}
    return compare(tiny_model, arms.arms, SENTIMENT.words, PROMPTS, ladders=ladders,
                   direction=-1, documents=documents, generate_prompts=PROMPTS[:2],
                   generate_tokens=3, text_score=vader_compound, throughput_repeats=1,
                   audit_items=SENTIMENT.items()[:3], target=1e-6, n_resamples=50)


def test_comparison_reports_every_arm_at_every_strength(result):
    ladder_rows = [(row.arm, row.strength) for row in result.rows if not row.matched]
    assert ladder_rows == [("steer:probe", 0.5), ("steer:probe", 1.0), ("steer:caa", 0.5),
                           ("steer:caa", 1.0), ("surgery", 4.0), ("surgery", 8.0),
                           ("surgery:random", 8.0)]
    for row in result.rows:
        assert row.effect.n == len(PROMPTS)
        assert row.effect.low <= row.effect.value <= row.effect.high
        assert row.text is not None and row.text.n == 2
        assert row.perplexity is not None and row.perplexity.value > 0
        assert row.perplexity_ratio is not None and row.perplexity_ratio.value > 0
        assert row.top1_delta is not None and -1 <= row.top1_delta.value <= 1
        assert row.tokens_per_s is not None and row.tokens_per_s > 0
    assert result.unsteered["tokens_per_s"] > 0
    assert result.unsteered["timed_arms"] == {"steering": "steer:probe", "surgery": "surgery"}
    speeds = {(row.kind, row.tokens_per_s) for row in result.rows}
    assert len(speeds) == 2  # one per kind
    assert set(result.unsteered["speed_ratio"]) == {"steering", "surgery"}
    assert all(r > 0 for r in result.unsteered["speed_ratio"].values())
    assert result.unsteered["perplexity"].value > 0
    assert set(result.slopes) == set(result.audit) == set(result.ladders)
    assert len(result.texts["unsteered"]) == 2


def test_matched_strengths_follow_from_the_ladders(result):
    assert result.target == 1e-6 and result.target_rule == "fixed"
    for arm, strength in result.matched.items():
        rows = [row for row in result.rows if row.arm == arm and not row.matched]
        xs = [0.0, *(r.strength for r in rows)]
        ys = [0.0, *(result.direction * r.effect.value for r in rows)]
        if strength is None:  # no ladder point reaches the target
            assert all(y < result.target for y in ys)
            continue
        # by hand: the ladder, linearly interpolated, reaches the target there, first
        assert _interpolate(xs, ys, strength) == pytest.approx(result.target, rel=1e-9)
        assert all(y < result.target for x, y in zip(xs, ys, strict=True) if x < strength)
        assert 0 < strength <= rows[-1].strength
        matched_row = result.row(arm, strength, matched=True)
        assert matched_row.tokens_per_s == rows[0].tokens_per_s
    assert any(s is not None for s in result.matched.values())  # the matched path ran


def test_control_arms_never_set_the_target(tiny_model, lower_arms):
    # on this model the random edit lowers the propensity significantly at 8 while the
    # probe's edit does not (checked first), so a target from all arms would be the control's
    arms = {name: lower_arms.arms[name] for name in ("surgery", "surgery:random")}
    assert arms["surgery:random"].control and not arms["surgery"].control
    found = compare(tiny_model, arms, SENTIMENT.words, PROMPTS, direction=-1,
                    ladders={"surgery": (8.0,), "surgery:random": (8.0,)}, n_resamples=50)
    assert found.reach["surgery:random"] is not None, "precondition: the control moves"
    assert found.target == common_target({"surgery": found.reach["surgery"]})
    assert found.target != found.reach["surgery:random"]


def test_no_text_score_is_assumed_when_none_is_given(tiny_model, lower_arms):
    # generated prompts are given (for throughput), a text score is not: no VADER column
    found = compare(tiny_model, {"surgery": lower_arms.arms["surgery"]}, SENTIMENT.words,
                    PROMPTS, direction=-1, ladders={"surgery": (4.0,)},
                    generate_prompts=PROMPTS[:1], generate_tokens=1, throughput_repeats=1,
                    n_resamples=20)
    assert all(row.text is None for row in found.rows)
    assert "text_score" not in found.unsteered and found.texts == {}
    assert found.text_metric == "" and "VADER" not in found.table()
    assert found.unsteered["tokens_per_s"] > 0  # the generation prompts were still used


def test_the_table_and_the_dict_say_what_was_measured(result, tiny_model):
    table = result.table()
    for name in result.ladders:
        assert name in table
    assert "matched effect: -0.00 nats (fixed)" in table
    assert "VADER Δ [CI]" in table and result.text_metric == "VADER"
    assert "sign audit" in table
    data = json.loads(json.dumps(result.to_dict()))
    assert len(data["rows"]) == len(result.rows)
    vocab = tiny_model.tokenizer.get_vocab()  # counted: one vocabulary entry after a space
    assert data["counted_words"] == {side: [w for w in getattr(SENTIMENT.words, side)
                                            if "Ġ" + w in vocab]
                                     for side in ("behaviour", "contrast")}
    assert data["slopes"]["surgery"]["verdict"] in ("moves", "reversed", "no effect")


def test_throughput_counts_every_new_token(tiny_model, arms):
    rounds = generation_throughput(tiny_model, [(arms.arms["surgery"], 2.0),
                                                (arms.arms["steer:caa"], 0.1)],
                                   PROMPTS[:2], max_new_tokens=2, repeats=2)
    assert len(rounds) == 3
    assert all(len(r) == 2 and all(rate > 0 and math.isfinite(rate) for rate in r)
               for r in rounds)


def test_bad_comparisons_are_refused_before_any_work(tiny_model, arms):
    words = SENTIMENT.words
    with pytest.raises(InvalidValueError, match="no ladder"):
        compare(tiny_model, arms.arms, words, PROMPTS, ladders={"surgery": (1.0,)})
    with pytest.raises(InvalidValueError, match="distinct positive"):
        compare(tiny_model, {"surgery": arms.arms["surgery"]}, words, PROMPTS,
                ladders={"surgery": (0.0, 1.0)})
    with pytest.raises(ActsteerError, match="target"):
        compare(tiny_model, {"surgery": arms.arms["surgery"]}, words, PROMPTS,
                ladders={"surgery": (1.0,)}, target=-1.0)


# -- the embedded model -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("direction", [pytest.param(1, marks=pytest.mark.heavy), -1])
def test_embedded_model_sentiment_moves_the_intended_way(smol, direction):
    texts = builtin_text_corpus().texts()[:4]
    norms = residual_norms(smol, texts, layers=[18], max_tokens=96)
    arms = build_arms(smol, SENTIMENT.pairs(), layer=18, norms=norms, direction=direction)
    prompts = list(neutral_prompts())[:24]
    result = compare(smol, arms.arms, SENTIMENT.words, prompts, direction=direction,
                     ladders={"steer:probe": (0.1,), "steer:caa": (0.1,), "surgery": (6.0,)},
                     audit_items=SENTIMENT.items(), throughput_repeats=0, n_resamples=300)
    caa = result.row("steer:caa", 0.1)
    assert caa.effect.verdict == "moves", caa.effect  # interval excludes 0, intended side
    assert direction * caa.effect.low > 0
    assert result.slope_verdict("steer:caa") == "moves"
    # the paper's surgery moves the completions its probe was trained on the intended way
    assert result.audit["surgery"].verdict == "moves", result.audit["surgery"]


def test_effect_vs_tax_draws_every_arm_from_the_unsteered_point(result):
    from actsteer.paper.surgery_vs_steering.figures import effect_vs_tax

    figure = effect_vs_tax([result])
    lines = [trace for trace in figure.data if trace.mode == "lines+markers"]
    assert [trace.name for trace in lines] == list(result.ladders)
    for trace in lines:
        assert (trace.x[0], trace.y[0]) == (1.0, 0.0)
        rows = [row for row in result.rows if row.arm == trace.name and not row.matched]
        assert list(trace.y[1:]) == [row.effect.value for row in rows]
    stars = [trace for trace in figure.data if trace.mode == "markers"]
    assert len(stars) == sum(s is not None for s in result.matched.values())
    with pytest.raises(InvalidValueError, match="at least one"):
        effect_vs_tax([])


# -- the study: one results-log cell per behaviour and direction ---------------------------

def test_the_study_resumes_from_its_results_log(tiny_model, tmp_path, monkeypatch):
    from actsteer.paper.surgery_vs_steering import study
    from actsteer.results import ResultConfigMismatchError, read_results

    settings = study.StudySettings(layer=2, k=8, steer=(0.5,), surgery=(4.0,),
                                   no_control=True, prompts=3, documents=2, max_tokens=24,
                                   generate=0, repeats=0, resamples=50)
    measured: list[int] = []
    real = study.compare
    monkeypatch.setattr(study, "compare", lambda *a, **k: measured.append(k["direction"])
                        or real(*a, **k))
    first = study.run_study(settings, ["sentiment"], [1], tmp_path, model=tiny_model,
                            progress=False)
    assert measured == [1] and list(first) == ["sentiment:+1"]
    log = read_results(tmp_path / study.RESULTS_FILE)
    assert log["config"] == settings.to_dict() and set(log["cells"]) == {"sentiment:+1"}
    # a second direction measures only that cell; the first is read back as it was
    both = study.run_study(settings, ["sentiment"], [1, -1], tmp_path, model=tiny_model,
                           progress=False)
    assert measured == [1, -1] and both["sentiment:+1"] == first["sentiment:+1"]
    assert study.run_study(settings, ["sentiment"], [-1, 1], tmp_path, model=tiny_model,
                           progress=False) == both
    assert measured == [1, -1]  # nothing left to measure
    assert "[sentiment:-1]" in (tmp_path / study.TABLE_FILE).read_text(encoding="utf-8")
    # other settings are refused before anything moves, unless overwrite
    with pytest.raises(ResultConfigMismatchError, match="overwrite"):
        study.run_study(study.StudySettings(layer=1), ["sentiment"], [1], tmp_path,
                        model=tiny_model, progress=False)
    # a whole-file comparison.json of an earlier version, same settings, is carried over
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / study.LEGACY_FILE).write_text(json.dumps(
        {"settings": settings.to_dict(), "comparisons": {"sentiment:+1": both["sentiment:+1"]}}),
        encoding="utf-8")
    carried = study.run_study(settings, ["sentiment"], [1], legacy, model=tiny_model,
                              progress=False)
    assert measured == [1, -1] and carried == {"sentiment:+1": both["sentiment:+1"]}


def test_the_study_reports_the_folded_basis_surgery_beside_the_paper_s(tiny_model, norms,
                                                                        tmp_path):
    from actsteer.paper.surgery_vs_steering import study

    arms = build_arms(tiny_model, SENTIMENT.pairs()[:6], layer=2, norms=norms, k=40,
                      folded=True)
    folded = arms.arms["surgery:folded"]
    assert isinstance(folded, SurgeryArm) and folded.edit.basis == "folded"
    assert arms.arms["surgery"].edit.basis == "checkpoint"  # type: ignore[union-attr]
    by_hand = select_region(tiny_model, arms.probe.flipped(), k=40, per="all", basis="folded")
    assert dict(folded.edit.rows) == dict(by_hand.rows) == dict(arms.folded_region.rows)
    assert torch.equal(folded.edit.direction, arms.arms["surgery"].edit.direction)
    assert arms.shared_rows == sum(len(set(arms.region.rows[layer]) & set(rows))
                                   for layer, rows in by_hand.rows.items())
    assert build_arms(tiny_model, SENTIMENT.pairs()[:6], layer=2, norms=norms,
                      k=40).folded_region is None
    settings = study.StudySettings(layer=2, k=8, steer=(0.5,), surgery=(4.0,),
                                   no_control=True, prompts=3, documents=2, max_tokens=24,
                                   generate=0, repeats=0, resamples=50, folded_surgery=[2])
    assert settings.to_dict()["folded_surgery"] == [2.0]
    assert "folded_surgery" not in replace(settings, folded_surgery=None).to_dict()  # old logs
    with pytest.raises(InvalidValueError, match="folded_surgery needs at least one"):
        replace(settings, folded_surgery=())
    cells = study.run_study(settings, ["sentiment"], [1], tmp_path, model=tiny_model,
                            progress=False)
    cell = cells["sentiment:+1"]
    rows = [(row["arm"], row["strength"]) for row in cell["result"]["rows"]
            if not row["matched"]]
    assert ("surgery", 4.0) in rows and ("surgery:folded", 2.0) in rows
    table = (tmp_path / study.TABLE_FILE).read_text(encoding="utf-8")
    assert [line.split()[0] for line in table.splitlines()
            if line.startswith("surgery")][:2] == ["surgery", "surgery:folded"]
    shared = cell["setup"]["folded_shared_rows"]
    assert 0 <= shared <= 8 and f"({shared} of them also in the folded-basis region)" in table
    plain = study.run_study(replace(settings, no_folded=True), ["sentiment"], [1],
                            tmp_path / "plain", model=tiny_model, progress=False)
    assert all(row["arm"] != "surgery:folded"
               for row in plain["sentiment:+1"]["result"]["rows"])
    assert plain["sentiment:+1"]["setup"]["folded_shared_rows"] is None
