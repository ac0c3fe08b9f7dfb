"""The behaviour region: gate rows most inversely aligned with the probe direction.

Each MLP neuron ``j`` of block ``L`` reads the residual stream through its gate row; the
region is the set of neurons whose row (in checkpoint coordinates, see
:mod:`actsteer.surgery.gates`) has the most negative cosine with the probe direction:
either every row below a ``threshold``, or the ``k`` most negative, counted per layer
(``per="layer"``) or over all the given layers together (``per="all"``, the official
code's choice). With ``basis="folded"`` the rows are compared in folded coordinates
instead, ``ln2.weight ⊙ row`` (the row as the residual stream, and the probe, see it; the
derivation is in :mod:`actsteer.surgery.gates`).

Example::

    region = select_region(model, probe, layers=range(8, 20), k=64)
    region.rows[12]          # sorted neuron indices of block 12
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.surgery.gates import (
    Basis,
    check_basis,
    check_surgical,
    checkpoint_rows,
    folded_norms,
    norm_gains,
)
from actsteer.surgery.probe import Probe, as_probe

__all__ = ["GateRows", "Region", "Scope", "select_region"]

Scope = Literal["layer", "all"]
"""How ``k`` counts: per layer, or over all the selected layers together."""


class GateRows:
    """Gate rows chosen per layer (``rows``: layer -> neuron indices): what a
    :class:`Region` selects and a :class:`~actsteer.surgery.edit.SurgeryEdit` edits."""

    rows: Mapping[int, tuple[int, ...]]

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.rows)

    @property
    def n_rows(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


@dataclass(frozen=True)
class Region(GateRows):
    """Selected gate rows per layer, with their cosines and how they were chosen."""

    rows: Mapping[int, tuple[int, ...]] = field(hash=False)
    """Layer -> neuron indices, ascending (a layer may select none)."""
    cosines: Mapping[int, tuple[float, ...]] = field(hash=False)
    """Layer -> cosine of each selected row with the probe direction, in ``rows`` order."""
    d_mlp: int
    threshold: float | None = None
    k: int | None = None
    per: Scope = "layer"
    basis: Basis = "checkpoint"
    """The coordinates the rows were compared in (:data:`~actsteer.surgery.gates.Basis`)."""

    def __post_init__(self) -> None:
        check_basis(self.basis)


def select_region(model: Any, probe: Probe | Tensor, *,
                  layers: int | Iterable[int] | None = None,
                  threshold: float | None = None, k: int | None = None,
                  per: Scope = "layer", basis: Basis = "checkpoint") -> Region:
    """The gate rows of ``layers`` (default: all) most inversely aligned with ``probe``.

    Give exactly one of ``threshold`` (select every row whose cosine with the probe
    direction is below it, in ``[-1, 1]``) or ``k`` (the ``k`` most negative cosines per
    layer, or over all ``layers`` with ``per="all"``). Ties go to the lower layer, then the
    lower neuron index. ``basis``: ``"checkpoint"`` compares the saved ``gate_proj`` rows
    ``w`` with the probe direction ``d`` (the paper's code); ``"folded"`` compares
    ``ln2.weight ⊙ w``, the row that reads the residual stream ``d`` lives in.
    """
    basis = check_basis(basis)
    probe = as_probe(probe)
    check_surgical(model)
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    chosen = check_layer_list(layers, n_layers)
    if probe.d_model != int(model.cfg.d_model):
        raise InvalidValueError(f"the probe has d_model {probe.d_model} but the model has "
                                f"{int(model.cfg.d_model)}; train it on this model's activations")
    _check_rule(threshold, k, per, d_mlp * (len(chosen) if per == "all" else 1))
    norms = folded_norms(model, chosen)
    gains = norm_gains(model, chosen) if basis == "folded" else {}
    direction = probe.direction.double()

    def rows(layer: int) -> Tensor:
        saved = checkpoint_rows(model, layer, norms.get(layer))
        return saved * gains[layer].double()[None, :] if basis == "folded" else saved

    cosines = {layer: torch.nn.functional.cosine_similarity(rows(layer), direction[None, :],
                                                            dim=1) for layer in chosen}
    picked = _pick(cosines, threshold, k, per)
    if not any(len(rows) for rows in picked.values()):
        warnings.warn(f"no gate row of layers {chosen} has cosine below {threshold} with the "
                      "probe; the region is empty", stacklevel=2)
    return Region(
        rows={layer: tuple(int(i) for i in rows) for layer, rows in picked.items()},
        cosines={layer: tuple(float(c) for c in cosines[layer][rows])
                 for layer, rows in picked.items()},
        d_mlp=d_mlp, threshold=None if threshold is None else float(threshold), k=k, per=per,
        basis=basis)


def _pick(cosines: dict[int, Tensor], threshold: float | None, k: int | None,
          per: Scope) -> dict[int, Tensor]:
    if threshold is not None:
        return {layer: (cos < threshold).nonzero().flatten() for layer, cos in cosines.items()}
    assert k is not None  # _check_rule saw to it
    if per == "layer":  # stable sort: ties go to the lower index
        return {layer: torch.sort(torch.sort(cos, stable=True).indices[:k]).values
                for layer, cos in cosines.items()}
    layers = list(cosines)
    flat = torch.cat([cosines[layer] for layer in layers])
    best = torch.sort(flat, stable=True).indices[:k]
    width = len(next(iter(cosines.values())))
    return {layer: torch.sort(best[best // width == i] % width).values
            for i, layer in enumerate(layers)}


def check_layer_list(layers: int | Iterable[int] | None, n_layers: int) -> list[int]:
    """``layers`` as a sorted list of distinct in-range block indices (``None``: all)."""
    if layers is None:
        return list(range(n_layers))
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise InvalidValueError("layers is empty; give at least one layer (or None for all)")
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise InvalidTypeError(f"layers must be ints, got {layer!r}")
        if not 0 <= layer < n_layers:
            raise InvalidValueError(f"layer {layer} is out of range: this model has layers "
                                    f"0..{n_layers - 1}")
    if len(set(items)) != len(items):
        raise InvalidValueError(f"duplicate layers in {items}")
    return sorted(items)


def _check_rule(threshold: float | None, k: int | None, per: str, k_max: int) -> None:
    if (threshold is None) == (k is None):
        raise InvalidValueError(
            f"give exactly one of threshold (a cosine in [-1, 1]) or k (a row count), got "
            f"threshold={threshold!r}, k={k!r}")
    if per not in ("layer", "all"):
        raise InvalidValueError(f"per must be 'layer' or 'all', got {per!r}")
    if threshold is not None:
        if per != "layer":
            raise InvalidValueError(f"per={per!r} applies to k only; a threshold selects "
                                    "the same rows either way")
        if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
                or not math.isfinite(threshold) or not -1.0 <= threshold <= 1.0):
            raise InvalidValueError(f"threshold must be a cosine in [-1, 1], got {threshold!r}")
    elif not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= k_max:
        scope = "per layer" if per == "layer" else "over the selected layers"
        raise InvalidValueError(f"k must be an int in 1..{k_max} (gate rows {scope}), "
                                f"got {k!r}")
