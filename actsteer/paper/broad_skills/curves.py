"""Skill curves of the broad-skills reproduction: coefficient schedule, relative accuracy,
the half-skill point and its bootstrap interval, and an adaptive coefficient sweep.

The paper (van der Weij, Poesio, Schoots 2024) adds a skill vector at one layer with an
increasing coefficient and reports, for each coefficient, next-token accuracy relative to
the unsteered model (coefficient 0). Its headline compares vectors at the coefficient
where the skill's relative accuracy is halved: how much text accuracy is left there.

Example::

    coefficients = paper_coefficients()
    point = half_skill_point(coefficients[:4], [1.0, 0.8, 0.4, 0.1], [1.0, 0.9, 0.8, 0.5])
    point.coefficient, point.text_rel        # 0.4375 and 0.825 (linear interpolation)
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from actsteer.errors import InvalidValueError
from actsteer.stats import Estimate, check_level, percentile_interval, resample_indices

logger = logging.getLogger(__name__)

STOP_BELOW = 0.05
"""The paper stops a sweep once the skill's relative accuracy falls below 5%."""

SKILL_OF: dict[str, str] = {"general": "code", "python": "python"}
"""The evaluation set measuring each base vector's skill."""


def base_of(vector: str) -> str:
    """``"general"`` or ``"python"``: the vector a name (maybe a control) derives from."""
    return vector.split("_", 1)[0]


def skill_of(vector: str) -> str:
    """The evaluation set that measures ``vector``'s skill."""
    return SKILL_OF[base_of(vector)]


def other_of(vector: str) -> str:
    """The other code set: Python for general-code vectors, non-Python code for Python."""
    return "python" if skill_of(vector) == "code" else "code"


def paper_coefficients() -> tuple[float, ...]:
    """The paper's coefficient schedule: 0, 0.25, 0.5, 0.6 … 2.0 (step 0.1),
    2.25 … 3 (step 0.25), 3.5 … 5 (step 0.5), 6, 7, 8, 15, 20, 30 (32 values)."""
    values = [0.0, 0.25, 0.5]
    values += [round(0.6 + 0.1 * i, 2) for i in range(15)]  # 0.6 … 2.0
    values += [2.25, 2.5, 2.75, 3.0]
    values += [3.5, 4.0, 4.5, 5.0]
    values += [6.0, 7.0, 8.0, 15.0, 20.0, 30.0]
    return tuple(values)


def check_schedule(coefficients: Sequence[float]) -> None:
    """Raise ``ValueError`` unless the schedule starts at 0 and strictly increases."""
    if not coefficients:
        raise InvalidValueError("the coefficient schedule is empty; give at least 0 and one more")
    if coefficients[0] != 0:
        raise InvalidValueError(
            f"the coefficient schedule must start at 0 (the unsteered reference), "
            f"got {coefficients[0]!r} first")
    for before, after in itertools.pairwise(coefficients):
        if not after > before:
            raise InvalidValueError(
                f"coefficients must strictly increase, got {before!r} then {after!r}")


@dataclass(frozen=True)
class HalfSkill:
    """Where the skill's relative accuracy first falls below ``threshold``.

    ``coefficient`` and ``text_rel`` are linearly interpolated between the last point at
    or above the threshold (index ``segment - 1``) and the first point below it
    (``segment``).
    """

    coefficient: float
    text_rel: float
    threshold: float
    segment: int


def half_skill_point(
    coefficients: Sequence[float],
    skill_rel: Sequence[float],
    text_rel: Sequence[float],
    threshold: float = 0.5,
) -> HalfSkill | None:
    """Interpolated coefficient where ``skill_rel`` first drops below ``threshold`` and the
    relative text accuracy there; ``None`` if it never does."""
    if not len(coefficients) == len(skill_rel) == len(text_rel):
        raise InvalidValueError(
            f"need one skill and text value per coefficient, got {len(coefficients)} "
            f"coefficients, {len(skill_rel)} skill and {len(text_rel)} text values")
    for index, value in enumerate(skill_rel):
        if value >= threshold:
            continue
        if index == 0:  # already below at the first coefficient: nothing to interpolate
            return HalfSkill(float(coefficients[0]), float(text_rel[0]), threshold, 0)
        s0, s1 = float(skill_rel[index - 1]), float(value)
        t = (s0 - threshold) / (s0 - s1)
        c0, c1 = float(coefficients[index - 1]), float(coefficients[index])
        x0, x1 = float(text_rel[index - 1]), float(text_rel[index])
        return HalfSkill(c0 + t * (c1 - c0), x0 + t * (x1 - x0), threshold, index)
    return None


def adaptive_sweep(
    coefficients: Sequence[float],
    evaluate: Callable[[float], float],
    *,
    stop_below: float = STOP_BELOW,
) -> list[tuple[float, float]]:
    """Call ``evaluate(c)`` (returning the skill's relative accuracy) for each coefficient
    in order, stopping right after the first result below ``stop_below``, or after a NaN
    (relative accuracy undefined: the unsteered skill accuracy is 0, so no later
    coefficient can say more).

    Returns the ``(coefficient, skill_rel)`` pairs evaluated.
    """
    check_schedule(coefficients)
    done: list[tuple[float, float]] = []
    for coefficient in coefficients:
        value = float(evaluate(coefficient))
        done.append((float(coefficient), value))
        if math.isnan(value):
            logger.warning("skill accuracy relative to coefficient 0 is undefined at %g (no "
                           "unsteered hits): stopping this sweep", coefficient)
            break
        if value < stop_below:
            logger.info("skill accuracy %.3f < %.3f at coefficient %g: stopping",
                        value, stop_below, coefficient)
            break
    return done


def _resampled_rates(correct: Tensor, tokens: Tensor, idx: Tensor) -> Tensor:
    """Token-weighted accuracy ``[coef, resample]`` of ``correct [coef, doc]`` over the
    documents ``idx [resample, doc]``."""
    hits = correct.double()[:, idx].sum(-1)
    total = tokens.double()[idx].sum(-1).clamp_min(1.0)
    return hits / total


def paired_relative(
    correct: Sequence[int] | Tensor,
    baseline: Sequence[int] | Tensor,
    tokens: Sequence[int] | Tensor,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Relative accuracy ``sum(correct) / sum(baseline)`` with a paired bootstrap over
    documents (the same resampled documents in numerator and denominator)."""
    c = torch.as_tensor(correct, dtype=torch.float64)
    b = torch.as_tensor(baseline, dtype=torch.float64)
    if c.shape != b.shape or c.numel() == 0:
        raise InvalidValueError(
            f"need matching non-empty per-document counts, got {tuple(c.shape)} "
            f"and {tuple(b.shape)}")
    if not b.sum() > 0:
        raise InvalidValueError(
            f"the baseline has 0 correct predictions over {b.numel()} documents, "
            "so relative accuracy is undefined; evaluate on more or longer "
            "documents, or a model that predicts some of them")
    del tokens  # the token counts cancel in the ratio; kept for a uniform signature
    idx = resample_indices(c.numel(), n_resamples, seed)
    draws = c[idx].sum(-1) / b[idx].sum(-1).clamp_min(1e-12)
    low, high = percentile_interval(draws, level)
    return Estimate(float(c.sum() / b.sum()), low, high, int(c.numel()))


@dataclass(frozen=True)
class HalfSkillEstimate:
    """The half-skill point with percentile-bootstrap intervals over documents.

    ``crossed`` is the share of resamples in which the skill curve crossed the threshold
    (intervals come from those resamples only).
    """

    coefficient: Estimate
    text_rel: Estimate
    crossed: float

    def as_dict(self) -> dict[str, object]:
        return {"coefficient": self.coefficient.as_dict(), "text_rel": self.text_rel.as_dict(),
                "crossed": self.crossed}


def bootstrap_half_skill(
    coefficients: Sequence[float],
    skill_correct: Tensor,
    skill_tokens: Tensor,
    text_correct: Tensor,
    text_tokens: Tensor,
    *,
    threshold: float = 0.5,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> HalfSkillEstimate | None:
    """Half-skill point of per-document counts ``[coef, doc]`` (row 0 = coefficient 0),
    with an interval from resampling the skill's and the text's documents (independently,
    each resample used for every coefficient: the documents are the same at all of them).

    ``None`` when the full-sample curve never crosses ``threshold``.
    """
    skill_correct = torch.as_tensor(skill_correct)
    text_correct = torch.as_tensor(text_correct)
    n_coef = len(coefficients)
    if skill_correct.shape[0] != n_coef or text_correct.shape[0] != n_coef:
        raise InvalidValueError(f"counts need one row per coefficient ({n_coef}), got "
                                f"{skill_correct.shape[0]} and {text_correct.shape[0]}")
    skill_tokens = torch.as_tensor(skill_tokens)
    text_tokens = torch.as_tensor(text_tokens)

    def curves(skill_idx: Tensor, text_idx: Tensor) -> tuple[Tensor, Tensor]:
        s = _resampled_rates(skill_correct, skill_tokens, skill_idx)
        x = _resampled_rates(text_correct, text_tokens, text_idx)
        return s / s[:1].clamp_min(1e-12), x / x[:1].clamp_min(1e-12)

    full_s, full_x = curves(torch.arange(skill_tokens.numel())[None],
                            torch.arange(text_tokens.numel())[None])
    point = half_skill_point(coefficients, full_s[:, 0].tolist(), full_x[:, 0].tolist(),
                             threshold)
    if point is None:
        return None
    check_level(level)
    generator = torch.Generator().manual_seed(seed)
    s_idx = resample_indices(skill_tokens.numel(), n_resamples, generator=generator)
    x_idx = resample_indices(text_tokens.numel(), n_resamples, generator=generator)
    rel_s, rel_x = curves(s_idx, x_idx)
    coefs, texts = [], []
    for r in range(n_resamples):
        found = half_skill_point(coefficients, rel_s[:, r].tolist(), rel_x[:, r].tolist(),
                                 threshold)
        if found is not None:
            coefs.append(found.coefficient)
            texts.append(found.text_rel)

    def estimate(value: float, draws: list[float], n: int) -> Estimate:
        if not draws:
            return Estimate(value, float("nan"), float("nan"), 0)
        return Estimate(value, *percentile_interval(draws, level), n)

    # n: the documents each estimate is "of": the skill's set for the coefficient where it
    # is halved, the companion (text) set for the accuracy kept there.
    return HalfSkillEstimate(estimate(point.coefficient, coefs, int(skill_tokens.numel())),
                             estimate(point.text_rel, texts, int(text_tokens.numel())),
                             len(coefs) / n_resamples)
