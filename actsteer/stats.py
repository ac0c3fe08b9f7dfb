"""Bootstrap confidence intervals for the metrics actsteer reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap(
    values: Sequence[float] | Tensor,
    statistic: Callable[[Tensor], Tensor] | None = None,
    *,
    weights: Sequence[float] | Tensor | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic`` (default: the mean; with ``weights``, the
    weighted mean ``sum(w x) / sum(w)``, e.g. token-weighted accuracy over documents)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w is not None and w.shape != x.shape:
        raise ValueError(f"{w.numel()} weights for {x.numel()} values")

    def stat(idx: Tensor | None) -> Tensor:
        xs = x if idx is None else x[idx]
        if w is not None:
            ws = w if idx is None else w[idx]
            return (xs * ws).sum(-1) / ws.sum(-1).clamp_min(1e-12)
        return statistic(xs) if statistic is not None else xs.mean(-1)

    point = float(stat(None))
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (n_resamples, x.numel()), generator=generator)
    if statistic is not None and w is None:
        draws = torch.stack([statistic(x[row]) for row in idx])
    else:
        draws = stat(idx)
    tail = (1 - level) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return Estimate(point, float(low), float(high), int(x.numel()))
