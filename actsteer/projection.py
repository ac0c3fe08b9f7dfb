"""Plans that project a direction out of the residual stream, clamp it, or swap it.

:func:`project` builds :class:`~actsteer.plan.SteeringPlan` values whose injections carry
an operator of :mod:`actsteer.operators`: directional ablation (Arditi et al. 2024, arXiv
2406.11717) and clamping ``x <- x - (x.d) d + c d``, and ablate-then-add
``x <- x - (x.d) d + k v``, at one layer, several, or every site that writes the residual
stream. They apply, sweep, generate and bake like any plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jaxtyping import Float
from torch import Tensor

from actsteer.errors import InvalidValueError
from actsteer.norms import ResidualNorms
from actsteer.operators import AblateThenAdd, Project, unit
from actsteer.plan import ALL, Injection, Positions, SteeringPlan
from actsteer.vector import SteeringVector

__all__ = ["EVERY_SITE", "every_site_hooks", "project"]

EVERY_SITE = ("resid_pre", "attn_out", "mlp_out")
"""The sites that write the residual stream: the embedding (``resid_pre`` of block 0) and
each block's attention and MLP outputs."""

Examples = Float[Tensor, "n d_model"] | float


def every_site_hooks(n_layers: int) -> list[tuple[int, str]]:
    """``(layer, site)`` of every write to the residual stream, in firing order."""
    return [(0, "resid_pre")] + [(layer, site) for layer in range(n_layers)
                                 for site in EVERY_SITE[1:]]


def _row(vector: SteeringVector | Tensor, layer: int) -> Tensor:
    return vector.at(layer) if isinstance(vector, SteeringVector) else vector


def _mean_projection(examples: Examples, direction: Tensor, layer: int) -> float:
    """The mean of ``examples . direction`` (activations ``[n, d_model]``), or the number."""
    if not isinstance(examples, Tensor):
        return float(examples)
    if examples.dim() != 2 or examples.shape[1] != direction.shape[0] or not len(examples):
        raise InvalidValueError(
            f"examples for layer {layer} have shape {tuple(examples.shape)}; give activations "
            f"[n, {direction.shape[0]}] read where the plan projects, or their mean "
            "projection as a number")
    return float((examples.double() @ direction.double()).mean())


def project(
    vector: SteeringVector | Tensor,
    layers: int | Sequence[int],
    value: float = 0.0,
    *,
    norms: ResidualNorms | None = None,
    examples: Examples | Mapping[int, Examples] | None = None,
    then_add: SteeringVector | Tensor | None = None,
    coefficient: float = 1.0,
    every_site: bool = False,
    n_layers: int | None = None,
    site: str | None = None,
    positions: Positions = ALL,
    label: str = "",
) -> SteeringPlan:
    """Replace the component along ``d = vector[layer] / |vector[layer]|`` by ``value``.

    ``x <- x - (x.d) d + c d`` at each layer: ``value=0`` ablates the direction, any other
    value clamps the component to ``c``. ``c``'s units are recorded in the plan
    (:class:`~actsteer.operators.Project`): raw by default; with ``norms``, ``value`` is a
    fraction of the median residual norm at the layer; with ``examples`` (activations
    ``[n, d_model]`` at the projected site, or their mean projection onto ``d`` as a
    number; a mapping by layer for several layers), a multiple of their mean projection.

    Args:
        vector: a :class:`SteeringVector` (its row at each layer, at its own site) or a
            ``[d_model]`` tensor (the same direction at every layer, default site
            ``resid_post``).
        layers: one block index or several (each projects at its own layer).
        then_add: ablate-then-add: remove ``d`` and add ``coefficient * then_add[layer]``
            (with ``norms``, ``coefficient`` is a fraction of the norm as in
            :func:`~actsteer.plan.single`); ``value`` must then be 0.
        every_site: ablate ``d`` (the row at the one given layer) wherever the residual
            stream is written: ``resid_pre`` of block 0 and ``attn_out``/``mlp_out`` of
            every block, as Arditi et al.; ``value`` must be 0.
        n_layers: the model's depth, for ``every_site`` (default: the one a
            :class:`SteeringVector` records in ``meta.model_n_layers``).

    Example:
        >>> plan = project(refusal, 12, every_site=True)        # ablate everywhere
        >>> plan = project(vector, [10, 11], 0.2, norms=norms)  # clamp to 0.2 |resid|
        >>> plan = project(vector, 10, then_add=other, coefficient=4.0)
    """
    chosen = [layers] if isinstance(layers, int) else [int(x) for x in layers]
    if not chosen:
        raise InvalidValueError("project() needs at least one layer")
    if norms is not None and examples is not None:
        raise InvalidValueError("give norms= or examples=, not both: they are two units for "
                                "the same value")
    if then_add is not None and (value != 0 or examples is not None):
        raise InvalidValueError(f"ablate-then-add removes the direction and adds then_add; "
                                f"value={value:g} and examples= do not apply (use "
                                "coefficient= for the added vector)")
    if every_site and (len(chosen) != 1 or value != 0 or then_add is not None or site):
        raise InvalidValueError(
            "every_site=True ablates one direction (the vector's row at ONE layer) at every "
            "write to the residual stream; give one layer, value=0, no then_add and no site "
            f"(got layers={chosen}, value={value:g}, site={site!r})")
    chosen_site = site or (vector.site if isinstance(vector, SteeringVector) else "resid_post")
    label = label or (vector.meta.dataset if isinstance(vector, SteeringVector) else "")
    if every_site:
        direction = unit(_row(vector, chosen[0]))
        everywhere = tuple(Injection(direction, layer, 0.0, where, positions, label,
                                     operator=Project())
                           for layer, where in every_site_hooks(_depth(vector, n_layers)))
        return SteeringPlan(everywhere, name=f"ablate({label or 'vector'}, every site, "
                                             f"L{chosen[0]} row)")
    injections: list[Injection] = []
    for layer in chosen:
        direction = unit(_row(vector, layer))
        if then_add is not None:
            added = _row(then_add, layer)
            fraction, strength = None, coefficient
            if norms is not None:
                fraction, strength = coefficient, norms.coefficient(added, layer, coefficient)
            injections.append(Injection(added, layer, strength, chosen_site, positions, label,
                                        fraction, AblateThenAdd(direction)))
            continue
        operator, size = Project(), 1.0
        if norms is not None:
            size = norms.median(layer)
            operator = Project("norm", size)
        elif examples is not None:
            given = examples[layer] if isinstance(examples, Mapping) else examples
            if isinstance(examples, Tensor) and len(chosen) > 1:
                raise InvalidValueError("one examples tensor for several layers: pass a "
                                        "mapping {layer: activations} (each layer's own)")
            size = _mean_projection(given, direction, layer)
            operator = Project("mean", size)
        injections.append(Injection(direction, layer, float(value) * size, chosen_site,
                                    positions, label, operator=operator))
    kind = "ablate" if then_add is None and value == 0 else (
        "ablate-then-add" if then_add is not None else f"clamp={value:g}")
    return SteeringPlan(tuple(injections), name=f"{kind}({label or 'vector'}, L"
                        + ",".join(map(str, chosen)) + ")")


def _depth(vector: SteeringVector | Tensor, n_layers: int | None) -> int:
    if n_layers is None and isinstance(vector, SteeringVector):
        n_layers = vector.meta.model_n_layers
    if not n_layers or n_layers < 1:
        raise InvalidValueError(f"every_site=True needs the model's depth (got {n_layers}); "
                                "pass n_layers=model.cfg.n_layers")
    return int(n_layers)
