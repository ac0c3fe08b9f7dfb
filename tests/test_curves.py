"""Skill curves of the broad-skills reproduction: schedule, half-skill point, adaptive stop,
bootstrap intervals."""

from __future__ import annotations

import math

import pytest
import torch

from actsteer.paper.broad_skills.curves import (
    adaptive_sweep,
    bootstrap_half_skill,
    check_schedule,
    half_skill_point,
    paired_relative,
    paper_coefficients,
)


def test_paper_schedule_matches_the_paper() -> None:
    coefficients = paper_coefficients()
    assert len(coefficients) == 32
    assert coefficients[:4] == (0.0, 0.25, 0.5, 0.6)
    assert coefficients[3:18] == tuple(round(0.6 + 0.1 * i, 2) for i in range(15))
    assert coefficients[17] == 2.0
    assert coefficients[18:22] == (2.25, 2.5, 2.75, 3.0)
    assert coefficients[22:26] == (3.5, 4.0, 4.5, 5.0)
    assert coefficients[-6:] == (6.0, 7.0, 8.0, 15.0, 20.0, 30.0)
    assert 1.3 in coefficients and 1.25 not in coefficients
    check_schedule(coefficients)  # starts at 0, strictly increasing


@pytest.mark.parametrize("bad", [(), (0.5, 1.0), (0.0, 1.0, 1.0), (0.0, 2.0, 1.0)])
def test_check_schedule_rejects(bad: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        check_schedule(bad)


def test_half_skill_interpolates_first_crossing() -> None:
    coefs = [0.0, 1.0, 2.0, 3.0, 4.0]
    skill = [1.0, 0.8, 0.4, 0.6, 0.1]  # crosses between 1 and 2 (then recovers, ignored)
    text = [1.0, 0.9, 0.7, 0.6, 0.5]
    point = half_skill_point(coefs, skill, text)
    assert point is not None
    # 0.8 -> 0.4: 0.5 reached a quarter of the way from 0.8 to 0.4 ... t = 0.3 / 0.4 = 0.75
    assert point.coefficient == pytest.approx(1.75)
    assert point.text_rel == pytest.approx(0.9 + 0.75 * (0.7 - 0.9))
    assert point.segment == 2
    other = half_skill_point(coefs, skill, text, threshold=0.2)
    assert other is not None and other.coefficient == pytest.approx(3.0 + 0.4 / 0.5)


def test_half_skill_none_when_never_crossed() -> None:
    assert half_skill_point([0.0, 1.0, 2.0], [1.0, 0.7, 0.5], [1.0, 1.0, 1.0]) is None
    with pytest.raises(ValueError):
        half_skill_point([0.0, 1.0], [1.0], [1.0, 1.0])


def test_adaptive_sweep_stops_after_first_point_below_stop() -> None:
    curve = {0.0: 1.0, 1.0: 0.5, 2.0: 0.06, 3.0: 0.04, 4.0: 0.5, 5.0: 0.01}
    seen: list[float] = []

    def evaluate(c: float) -> float:
        seen.append(c)
        return curve[c]

    done = adaptive_sweep(list(curve), evaluate, stop_below=0.05)
    assert seen == [0.0, 1.0, 2.0, 3.0]
    assert done[-1] == (3.0, 0.04)
    seen.clear()
    adaptive_sweep(list(curve), evaluate, stop_below=0.0)  # never stops
    assert seen == list(curve)


def test_adaptive_sweep_stops_on_undefined_relative_accuracy() -> None:
    seen: list[float] = []

    def evaluate(c: float) -> float:
        seen.append(c)
        return 1.0 if c == 0 else float("nan")  # no unsteered hits: relative is undefined

    done = adaptive_sweep([0.0, 1.0, 2.0, 3.0], evaluate, stop_below=0.05)
    assert seen == [0.0, 1.0] and len(done) == 2


def test_paired_relative_point_and_interval() -> None:
    base = torch.tensor([10, 20, 30, 40])
    est = paired_relative(base // 2, base, torch.tensor([50, 50, 50, 50]), n_resamples=200)
    assert est.value == pytest.approx(0.5)
    assert est.low == pytest.approx(0.5) and est.high == pytest.approx(0.5)  # exact halves
    noisy = paired_relative(torch.tensor([0, 20, 30, 40]), base, base, n_resamples=500)
    assert noisy.low < noisy.value < noisy.high


def test_bootstrap_half_skill_matches_point_and_brackets_it() -> None:
    coefs = [0.0, 1.0, 2.0]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.full((30,), 100)
    base = torch.randint(60, 90, (30,), generator=gen)
    skill = torch.stack([base, (base * 0.7).long(), (base * 0.2).long()])
    text = torch.stack([base, (base * 0.95).long(), (base * 0.8).long()])
    found = bootstrap_half_skill(coefs, skill, tokens, text, tokens, n_resamples=300)
    assert found is not None
    s = skill.sum(1).double() / skill[0].sum()
    x = text.sum(1).double() / text[0].sum()
    point = half_skill_point(coefs, s.tolist(), x.tolist())
    assert point is not None
    assert found.coefficient.value == pytest.approx(point.coefficient)
    assert found.text_rel.value == pytest.approx(point.text_rel)
    assert found.text_rel.low <= found.text_rel.value <= found.text_rel.high
    assert found.crossed == 1.0
    never = bootstrap_half_skill(coefs, text, tokens, skill, tokens, n_resamples=50)
    assert never is None
    assert not math.isnan(found.coefficient.low)
