"""The plans of the comparison, named, and what separates them.

With each behaviour ``b`` at its own layer ``L_b`` and strength ``f`` (a fraction of the
median residual norm there):

* ``individual:b`` — ``b``'s vector alone at ``L_b`` (``-individual:b``: subtracted);
* ``individual@L:b`` — ``b``'s vector alone at the combined layer ``L``;
* ``simultaneous`` — every vector at its own layer, each at ``f``, in one pass;
* ``combined-sum`` — every vector at ``L``, each at ``f``: the simultaneous plan moved to
  one layer (two additions at one site are one addition, so this *is* a combined vector);
* ``combined-mean`` / ``combined-weighted_mean`` — the paper's recipes: the raw vectors
  averaged (or weighted by each behaviour's own coefficient, then averaged) under ONE
  coefficient, scaled so the merged vector's norm equals ``combined-sum``'s;
* ``combined-sum@paper`` — ``combined-sum`` at the paper's layer (15 of 32, scaled), when
  ``L`` is another layer;
* ``simultaneous-distinct`` — the paper's design: every vector at a layer of its own
  (distinct layers), when the own layers coincide.

So ``simultaneous`` against ``combined-sum`` isolates the layers (the *layer effect*), and
``combined-sum`` against ``combined-mean`` / ``combined-weighted_mean`` isolates the
coefficients (the *recipe effect*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from actsteer.errors import InvalidValueError
from actsteer.norms import ResidualNorms
from actsteer.plan import Injection, SteeringPlan, empty_plan, simultaneous, single
from actsteer.vector import SteeringVector

UNSTEERED = "unsteered"


def steer_plan(behaviour: str, fraction: float, individual_fraction: float) -> str:
    """The name of the plan that adds ``behaviour``'s vector at ``fraction`` at its own
    layer (the individual plans for ``±individual_fraction``; the unsteered one for 0)."""
    if fraction == 0:
        return UNSTEERED
    if fraction == individual_fraction:
        return f"individual:{behaviour}"
    if fraction == -individual_fraction:
        return f"-individual:{behaviour}"
    return f"steer:{behaviour}:{fraction:+g}"


def individual(name: str, vector: SteeringVector, layer: int, fraction: float,
               norms: ResidualNorms) -> SteeringPlan:
    return single(vector, layer, fraction, norms=norms, label=name)


def comparison_plans(vectors: Mapping[str, SteeringVector], own_layers: Mapping[str, int],
                     combined_layer: int, fraction: float, norms: ResidualNorms,
                     recipes: Sequence[str], *, paper_layer: int | None = None,
                     distinct: Mapping[str, int] | None = None) -> dict[str, SteeringPlan]:
    """Every plan the test split scores, by name (see the module docstring)."""
    plans: dict[str, SteeringPlan] = {UNSTEERED: empty_plan()}
    for name, vector in vectors.items():
        plans[f"individual:{name}"] = individual(name, vector, own_layers[name], fraction, norms)
        plans[f"-individual:{name}"] = individual(name, vector, own_layers[name], -fraction,
                                                  norms)
        plans[f"individual@L:{name}"] = individual(name, vector, combined_layer, fraction,
                                                   norms)
    spec = {name: (vector, own_layers[name], fraction) for name, vector in vectors.items()}
    plans["simultaneous"] = simultaneous(spec, norms=norms)
    plans["-simultaneous"] = simultaneous(spec, scale=-1.0, norms=norms)
    for recipe in recipes:
        plans[f"combined-{recipe}"] = combined_plan(vectors, own_layers, combined_layer,
                                                    fraction, norms, recipe)
    if paper_layer is not None and paper_layer != combined_layer:
        plans["combined-sum@paper"] = combined_plan(vectors, own_layers, paper_layer, fraction,
                                                    norms, "sum")
    if distinct is not None:
        plans["simultaneous-distinct"] = simultaneous(
            {name: (vector, distinct[name], fraction) for name, vector in vectors.items()},
            norms=norms)
    return plans


def combined_plan(vectors: Mapping[str, SteeringVector], own_layers: Mapping[str, int],
                  layer: int, fraction: float, norms: ResidualNorms, recipe: str
                  ) -> SteeringPlan:
    """One vector at ``layer`` mixing every behaviour by ``recipe`` (module docstring)."""
    for vector in vectors.values():
        norms.check_vector(vector)
    own = {name: norms.coefficient(v.at(layer), layer, fraction, site=v.site)
           for name, v in vectors.items()}
    total = sum((own[name] * v.at(layer).double() for name, v in vectors.items()),
                torch.zeros(()))
    if recipe == "sum":
        mixed, label = total, "sum(" + ",".join(vectors) + ")"
    else:
        if recipe == "mean":
            weights = dict.fromkeys(vectors, 1.0)
        elif recipe == "weighted_mean":
            # the paper weights each vector by the coefficient it gets alone (at its layer)
            weights = {name: norms.coefficient(v.at(own_layers[name]), own_layers[name],
                                               fraction, site=v.site)
                       for name, v in vectors.items()}
        else:
            raise InvalidValueError(f"unknown combined recipe {recipe!r}; use sum, mean or "
                                    "weighted_mean")
        raw = sum((weights[name] * v.at(layer).double() for name, v in vectors.items()),
                  torch.zeros(())) / len(vectors)
        # one shared coefficient, chosen so the merged vector is as strong as the sum's
        mixed = raw * (total.norm() / raw.norm())
        label = f"{recipe}(" + ",".join(vectors) + ")"
    site = next(iter(vectors.values())).site
    share = float(mixed.norm()) / norms.median(layer, site)
    injection = Injection(mixed.to(torch.float32), layer, 1.0, site, label=label,
                          fraction=share)
    return SteeringPlan((injection,), name=f"combined-{recipe}(L{layer})")
