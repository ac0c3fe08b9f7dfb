"""Steering strength in units of the residual stream's norm.

A raw multiplier means little on its own: ``x8`` of one vector can be a tenth of the
residual norm at one layer and most of it at another, or for a vector built another way.
:func:`residual_norms` measures the median norm of the residual stream at each layer over
real text; a plan built with ``norms=`` then takes its strength as a **fraction** of that
median (``coefficient * |v[layer]| = fraction * median norm at layer``), records the
fraction in the plan, and is comparable across layers, behaviours and extraction methods.

The first position of each text is left out of the median: its residual norm is an
outlier whatever token sits there. Every later token can attend to it, and models park
attention there (an attention sink) with a massive activation, with or without a BOS
token. The embedded model adds no BOS, and its first *word* has ~115x the median norm of
the other positions at layer 18 and 6-8x at layers 5 and 29 (three short texts). One such
position per text would shift the median of a corpus of short texts.

Norms know where they were measured: the ``site`` and the model (name, depth and width,
from :func:`actsteer.models.model_info`). A vector added at another site, or built on
another model, is refused rather than scaled by a norm that is not its own. The one
exception is exact: ``resid_pre`` of layer ``L`` is the same activation as ``resid_post``
of layer ``L - 1`` (the input of a block is the output of the one before), so either
measures the other one layer apart.

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
from actsteer.models import model_info
from actsteer.progress import by_items
from actsteer.sites import check_layers
from actsteer.vector import SteeringVector, VectorMismatchError

__all__ = ["ResidualNorms", "residual_norms"]


@dataclass(frozen=True)
class ResidualNorms:
    """Median L2 norm of the residual stream at ``site`` per layer, over ``n_tokens``
    tokens of real text (each text's first token left out), on the model ``model`` with
    ``n_layers`` blocks of width ``d_model`` (``""`` / 0: not recorded, not checked)."""

    site: str
    medians: Mapping[int, float]
    n_tokens: int
    source: str = ""
    """What the norms were measured on (for provenance)."""
    model: str = ""
    """The model's name (:func:`actsteer.models.model_info`)."""
    n_layers: int = 0
    d_model: int = 0

    def __post_init__(self) -> None:
        medians = {int(layer): float(value) for layer, value in self.medians.items()}
        bad = {layer: value for layer, value in medians.items() if not value > 0}
        if bad:
            raise InvalidValueError(f"residual norms must be positive, got {bad}")
        object.__setattr__(self, "medians", medians)

    def median(self, layer: int, site: str | None = None) -> float:
        """The median norm at ``layer`` of ``site`` (default: the site measured).

        Raises:
            InvalidValueError: ``site`` is neither the site measured nor its exact
                equivalent one layer apart (``resid_pre`` L = ``resid_post`` L-1).
            MissingKeyError: that layer was not measured.
        """
        measured = _measured_layer(self.site, site or self.site, layer)
        if measured not in self.medians:
            raise MissingKeyError(f"no residual norm measured at layer {layer} of "
                                  f"{site or self.site}" + ("" if measured == layer else
                                  f" ({self.site} of layer {measured})") +
                                  f"; measured {self.site} layers: {sorted(self.medians)}")
        return self.medians[measured]

    def coefficient(self, direction: Float[Tensor, " d_model"], layer: int,
                    fraction: float, *, site: str | None = None) -> float:
        """The coefficient that makes ``coefficient * |direction| = fraction * median``,
        for ``direction`` added at ``layer`` of ``site`` (default: the site measured;
        another site is refused, see :meth:`median`)."""
        width = int(direction.shape[-1])
        if self.d_model and width != self.d_model:
            raise VectorMismatchError(
                f"the vector at layer {layer} has width {width} but these norms were measured "
                f"on {self.model or 'a model'} with d_model {self.d_model}; measure "
                "residual_norms on the model the vector is for")
        median = self.median(layer, site)
        norm = float(direction.detach().double().norm())
        if not norm > 0:
            raise InvalidValueError(f"the vector at layer {layer} has norm {norm}; a zero "
                                    "vector cannot be scaled to a fraction of the norm")
        return float(fraction) * median / norm

    def check_source(self, model: str = "", n_layers: int = 0, d_model: int = 0) -> None:
        """Raise :class:`~actsteer.vector.VectorMismatchError` if the norms were measured on
        another model than the one described (a name, depth or width that differs; an
        empty or zero value on either side is not compared)."""
        ours = {"name": self.model, "n_layers": self.n_layers, "d_model": self.d_model}
        theirs = {"name": model, "n_layers": n_layers, "d_model": d_model}
        differ = {key: (ours[key], theirs[key]) for key in ours
                  if ours[key] and theirs[key] and theirs[key] != "unknown"
                  and ours[key] != theirs[key]}
        if differ:
            detail = ", ".join(f"{key} {mine!r} vs {other!r}"
                               for key, (mine, other) in differ.items())
            raise VectorMismatchError(
                f"these norms were measured on another model ({detail}: norms vs target); "
                "measure residual_norms on the model you steer")

    def check_vector(self, vector: SteeringVector) -> None:
        """:meth:`check_source` against the model ``vector`` was extracted from."""
        self.check_source(vector.meta.model, vector.meta.model_n_layers, vector.d_model)

    def check_fits(self, model: Any) -> None:
        """:meth:`check_source` against a loaded model."""
        info = model_info(model)
        self.check_source(info.name, info.n_layers, info.d_model)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "medians": {str(k): v for k, v in self.medians.items()},
                "n_tokens": self.n_tokens, "source": self.source, "model": self.model,
                "n_layers": self.n_layers, "d_model": self.d_model}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResidualNorms:
        try:
            return cls(str(data["site"]), {int(k): float(v) for k, v in data["medians"].items()},
                       int(data["n_tokens"]), str(data.get("source", "")),
                       str(data.get("model", "")), int(data.get("n_layers", 0)),
                       int(data.get("d_model", 0)))
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
        keep[:, 0] = False  # the first position's norm is an outlier (module docstring)

        captured = [(name, _grabber(norms[name], keep)) for name in names]
        with torch.no_grad(), model.hooks(fwd_hooks=captured):
            model(batch.tokens, attention_mask=batch.attention_mask,
                  stop_at_layer=max(chosen) + 1)
    medians = {layer: float(torch.cat(norms[name]).median())
               for layer, name in zip(chosen, names, strict=True)}
    count = int(sum(len(s) - 1 for s in sequences))
    info = model_info(model)
    return ResidualNorms(site, medians, count, source, info.name, info.n_layers, info.d_model)


_NEXT_BLOCK = {("resid_post", "resid_pre"): 1, ("resid_pre", "resid_post"): -1}
"""(measured site, wanted site) -> layer offset of the same activation: the input of block
``L`` (``resid_pre``) is the output of block ``L - 1`` (``resid_post``)."""


def _measured_layer(measured: str, wanted: str, layer: int) -> int:
    """The layer of ``measured`` holding the activation of ``wanted`` at ``layer``."""
    if wanted == measured:
        return layer
    if (measured, wanted) in _NEXT_BLOCK:
        return layer - _NEXT_BLOCK[measured, wanted]
    raise InvalidValueError(
        f"these norms were measured at {measured!r} but the vector is added at {wanted!r}, "
        f"whose activations have another norm; measure residual_norms(..., site={wanted!r}) "
        "for it")


def _grabber(store: list[Tensor], keep: Tensor) -> Any:
    """A hook appending the norms of the kept positions to ``store``."""

    def hook(activation: Tensor, hook: Any) -> None:
        store.append(activation.float().norm(dim=-1)[keep.to(activation.device)].cpu())

    return hook
