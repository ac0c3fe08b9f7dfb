"""Steering strength in units of the residual stream's norm.

A raw multiplier means little on its own: ``x8`` of one vector can be a tenth of the
residual norm at one layer and most of it at another, or for a vector built another way.
:func:`residual_norms` measures the median norm of the residual stream at each layer over
real text; a plan built with ``norms=`` then takes its strength as a **fraction** of that
median (``coefficient * |v[layer]| = fraction * median norm at layer``), records the
fraction in the plan, and is comparable across layers, behaviours and extraction methods.

The first position of each text is left out of the median: the BOS token's residual
stream is an attention sink whose norm is many times the others'.

Example::

    norms = residual_norms(model, texts)                 # ResidualNorms, per layer
    plan = single(vector, layer=10, coefficient=0.1, norms=norms)
    plan.injections[0].fraction                          # 0.1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.batching import encode_many, length_batches, pad
from actsteer.errors import InvalidValueError, MissingKeyError
from actsteer.progress import by_items
from actsteer.sites import check_layers

__all__ = ["ResidualNorms", "residual_norms"]


@dataclass(frozen=True)
class ResidualNorms:
    """Median L2 norm of the residual stream at ``site`` per layer, over ``n_tokens``
    tokens of real text (each text's first token left out)."""

    site: str
    medians: Mapping[int, float]
    n_tokens: int
    source: str = ""
    """What the norms were measured on (for provenance)."""

    def __post_init__(self) -> None:
        medians = {int(layer): float(value) for layer, value in self.medians.items()}
        bad = {layer: value for layer, value in medians.items() if not value > 0}
        if bad:
            raise InvalidValueError(f"residual norms must be positive, got {bad}")
        object.__setattr__(self, "medians", medians)

    def median(self, layer: int) -> float:
        """The median norm at ``layer``."""
        if layer not in self.medians:
            raise MissingKeyError(f"no residual norm measured at layer {layer}; measured "
                                  f"layers: {sorted(self.medians)}")
        return self.medians[layer]

    def coefficient(self, direction: Float[Tensor, " d_model"], layer: int,
                    fraction: float) -> float:
        """The coefficient that makes ``coefficient * |direction| = fraction * median``."""
        norm = float(direction.detach().double().norm())
        if not norm > 0:
            raise InvalidValueError(f"the vector at layer {layer} has norm {norm}; a zero "
                                    "vector cannot be scaled to a fraction of the norm")
        return float(fraction) * self.median(layer) / norm

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "medians": {str(k): v for k, v in self.medians.items()},
                "n_tokens": self.n_tokens, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResidualNorms:
        try:
            return cls(str(data["site"]), {int(k): float(v) for k, v in data["medians"].items()},
                       int(data["n_tokens"]), str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidValueError(f"not a ResidualNorms dict ({error}): {dict(data)!r}"
                                    ) from None


def residual_norms(
    model: Any,
    texts: Sequence[str] | Sequence[Sequence[int]],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    max_tokens: int = 256,
    batch_size: int = 16,
    source: str = "",
    progress: bool = False,
) -> ResidualNorms:
    """Median residual-stream norm per layer over the real tokens of ``texts`` (text or
    token ids, truncated to ``max_tokens``; each text's first token is left out)."""
    if not texts:
        raise InvalidValueError("residual_norms needs at least one text")
    encoded: list[list[int]] = (encode_many(model, [str(t) for t in texts])
                                if isinstance(texts[0], str)
                                else [[int(x) for x in t] for t in texts])
    sequences = [ids[:max_tokens] for ids in encoded]
    if all(len(s) < 2 for s in sequences):
        raise InvalidValueError("every text is shorter than 2 tokens; give longer texts")
    chosen = list(range(int(model.cfg.n_layers))) if layers is None else [int(x) for x in layers]
    names = check_layers(model, chosen, site)
    norms: dict[str, list[Tensor]] = {name: [] for name in names}
    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in by_items(groups, desc="residual norms", progress=progress, unit="text"):
        batch = pad(model, [sequences[i] for i in group], padding_side="right")
        keep = batch.attention_mask.bool().clone()
        keep[:, 0] = False  # the first token (BOS) is an attention sink

        captured = [(name, _grabber(norms[name], keep)) for name in names]
        with torch.no_grad(), model.hooks(fwd_hooks=captured):
            model(batch.tokens, attention_mask=batch.attention_mask,
                  stop_at_layer=max(chosen) + 1)
    medians = {layer: float(torch.cat(norms[name]).median())
               for layer, name in zip(chosen, names, strict=True)}
    count = int(sum(len(s) - 1 for s in sequences))
    return ResidualNorms(site, medians, count, source)


def _grabber(store: list[Tensor], keep: Tensor) -> Any:
    """A hook appending the norms of the kept positions to ``store``."""

    def hook(activation: Tensor, hook: Any) -> None:
        store.append(activation.float().norm(dim=-1)[keep.to(activation.device)].cpu())

    return hook
