"""Matched effect size: the strength at which each method reaches one common effect.

Two ways of moving a behaviour have strengths in different units (a fraction of the
residual norm for a steering vector, the step added to each gate row for a surgery), so
their ladders cannot be compared row by row. What can be compared is what each costs
*at the same effect*. Matching is done in two steps:

1. :func:`common_target` — the effect every method is asked to reach: by default the
   largest effect of the *weakest* method on its ladder (so every method that moves at all
   can reach it without extrapolating), counting only ladder points whose interval
   excludes 0 in the intended direction; or a fixed target the caller gives.
2. :func:`matched_strength` — per method, the strength where its ladder first reaches the
   target, by linear interpolation between the two ladder points around the crossing
   (the ladder starts at strength 0 with effect 0). A method whose ladder never reaches
   the target is not matched (``None``); nothing is extrapolated.

The matched strength is then measured afresh, so the reported effect at the matched point
is a measurement, and differs from the target by the ladder's curvature and noise.

Example::

    matched_strength([0.0, 0.1, 0.25], [0.0, 0.8, 2.0], 1.0)      # 0.125
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from actsteer.errors import InvalidValueError

__all__ = ["common_target", "matched_strength"]


def matched_strength(strengths: Sequence[float], effects: Sequence[float],
                     target: float) -> float | None:
    """The smallest strength at which the piecewise-linear ladder ``(strengths, effects)``
    reaches ``target``, or ``None`` if no ladder point reaches it.

    ``strengths`` must be ascending and distinct; ``effects`` are the mean effects at them,
    oriented so that the intended direction is positive; ``target`` must be positive. The
    crossing is interpolated between the last point below the target and the first at or
    above it (a ladder that is not monotone is matched at its first crossing).
    """
    xs = [float(s) for s in strengths]
    ys = [float(e) for e in effects]
    if len(xs) != len(ys) or len(xs) < 2:
        raise InvalidValueError(f"a ladder needs at least two (strength, effect) points, got "
                                f"{len(xs)} strengths and {len(ys)} effects")
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        raise InvalidValueError(f"ladder values must be finite, got {xs} and {ys}")
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise InvalidValueError(f"strengths must be ascending and distinct, got {xs}")
    if not (math.isfinite(target) and target > 0):
        raise InvalidValueError(f"target must be a positive effect (in the intended "
                                f"direction), got {target!r}")
    if ys[0] >= target:
        return xs[0]
    for i in range(1, len(xs)):
        (x0, y0), (x1, y1) = (xs[i - 1], ys[i - 1]), (xs[i], ys[i])
        if y0 < target <= y1:
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return None


def common_target(reach: Mapping[str, float | None]) -> float | None:
    """The smallest of the methods' reaches (each method's largest effect in the intended
    direction among its ladder points whose interval excludes 0 there; ``None`` for a
    method with no such point), or ``None`` if no method moves the behaviour."""
    moving = [float(value) for value in reach.values() if value is not None and value > 0]
    return min(moving) if moving else None
