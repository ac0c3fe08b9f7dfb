"""Choosing a steering layer from measured effects: each behaviour's own layer
(:func:`strongest_layer`, the largest lower bound of its paired effect), and, for the paper's
design, one layer per behaviour where the candidates allow (:func:`distinct_layers`), so that
behaviours steered together do not all pile into one block.

Example::

    effects = {"sentiment": {6: e6, 9: e9}, "french": {6: f6, 9: f9}}   # paired effects
    strongest_layer(effects["sentiment"])                            # 9
    distinct_layers(effects)                                         # {"sentiment": 9, ...}
"""

from __future__ import annotations

from collections.abc import Mapping

from actsteer.effects import Effect
from actsteer.errors import InvalidValueError

__all__ = ["distinct_layers", "strongest_layer"]


def strongest_layer(effects: Mapping[int, Effect]) -> int:
    """The layer whose paired effect has the largest lower bound (the effect the items
    support most surely); ties keep the candidates' order."""
    if not effects:
        raise InvalidValueError("no measured layer to choose from; measure at least one")
    return max(effects, key=lambda layer: effects[layer].low)


def distinct_layers(effects: Mapping[str, Mapping[int, Effect]]) -> dict[str, int]:
    """Each behaviour's layer with the largest lower bound of its own paired effect, no
    two behaviours on one layer while a free candidate is left.

    Behaviours choose in order of their best lower bound, strongest first; each takes its
    best layer not yet taken, or its best layer if every candidate is taken (more
    behaviours than layers). Ties keep the candidates' order. Returns the layers in the
    order of ``effects``.
    """
    empty = sorted(name for name, by_layer in effects.items() if not by_layer)
    if empty:
        raise InvalidValueError(f"behaviours {empty} have no measured layer; measure each "
                                "at one candidate layer at least")
    order = sorted(effects, key=lambda name: -max(e.low for e in effects[name].values()))
    taken: set[int] = set()
    chosen: dict[str, int] = {}
    for name in order:
        ranked = sorted(effects[name], key=lambda layer: -effects[name][layer].low)
        free = [layer for layer in ranked if layer not in taken] or ranked
        chosen[name] = free[0]
        taken.add(free[0])
    return {name: chosen[name] for name in effects}
