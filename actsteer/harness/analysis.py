"""From stored cells to the harness's numbers: ratings, the strength chosen on the ``select``
half, and every score on the ``report`` half with its interval.

* the mapping's thresholds come from the unsteered reference on the ``select`` half
  (:mod:`actsteer.harness.mapping`);
* a laddered method's strength is the one with the highest mean combined score on the
  ``select`` half (ties: the weaker strength); :func:`choose_strength` reads that half only;
* on the ``report`` half each raw score and rating gets a bootstrap interval over
  instructions (:func:`actsteer.stats.bootstrap`), and each method's combined score a paired
  difference against prompting on the same instructions (:func:`actsteer.effects.paired_effect`).

For the judged table every row also gets, on the same report instructions, its ``effect``
(the paired difference of the raw concept score, VADER for sentiment, against its
baseline: the unsteered model for a method that raises the behaviour, prompting alone for
one that lowers it, the verdict read against that goal), its ``fluency_cost`` (the paired
difference of the per-token log-likelihood against the same baseline), ``vs_reference``
and ``vs_reference_effect`` (its combined score and its raw concept score against the CAA
row of its goal, ``steering`` or ``subtract``, paired on the report instructions) and the
held-out detection ROC-AUC of the direction it uses. A method with ``matched_to`` (the
learned vector) is reported at that method's chosen strength: the same fraction of the
residual norm, so at matched norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actsteer.effects import paired_effect
from actsteer.harness.mapping import Thresholds, rate
from actsteer.harness.methods import METHODS
from actsteer.stats import bootstrap

__all__ = [
    "RATED_SCORES",
    "RAW_SCORES",
    "choose_strength",
    "method_strengths",
    "summarise",
    "thresholds_for",
]

RATED_SCORES: tuple[str, ...] = ("concept", "relevance", "fluency", "combined")
"""The 0-2 ratings (and their harmonic mean) reported per method."""
RAW_SCORES: tuple[str, ...] = ("concept", "vader", "relevance", "fluency")
"""The raw scores reported beside them (``vader`` for sentiment only)."""

_REFERENCE = "unsteered"
_PROMPTING = "prompting"
_CAA_ROW = {"raise": "steering", "lower": "subtract"}
"""The CAA row each goal's rows are compared with."""


def _key(behaviour: str, method: str, strength: float, half: str) -> str:
    return f"{behaviour}/{method}/{strength:g}/{half}"


def thresholds_for(cells: Mapping[str, Any], behaviour: str) -> Thresholds:
    """The mapping's thresholds from ``behaviour``'s reference cell on the ``select`` half."""
    reference = cells[_key(behaviour, _REFERENCE, 0.0, "select")]
    scale = "vader" if reference.get("vader") is not None else "words"
    concept = reference["vader"] if scale == "vader" else reference["concept"]
    return Thresholds.from_reference(concept, reference["relevance"], reference["fluency"],
                                     scale)


def method_strengths(cells: Mapping[str, Any], behaviour: str, method: str,
                     half: str) -> list[float]:
    """The strengths a method has cells for on one half, ascending."""
    prefix = f"{behaviour}/{method}/"
    found = [float(key[len(prefix):].rsplit("/", 1)[0]) for key in cells
             if key.startswith(prefix) and key.endswith(f"/{half}")]
    return sorted(found)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def goal_of(method: str) -> str:
    """``raise`` or ``lower`` (the reference cells raise: they are the unsteered model)."""
    found = METHODS.get(method)
    return "raise" if found is None else found.goal


def choose_strength(cells: Mapping[str, Any], behaviour: str, method: str,
                    thresholds: Thresholds) -> tuple[float, dict[str, float]]:
    """The strength with the highest mean combined score on the ``select`` half (ties: the
    weaker), and each strength's mean there. Reads ``select`` cells only. A method with
    non-zero strengths is chosen among those (as AxBench's factors: a row that intervenes;
    the model without it is the ``unsteered`` or ``prompting`` row)."""
    means = {}
    found = method_strengths(cells, behaviour, method, "select")
    for strength in [s for s in found if s != 0] or found:
        cell = cells[_key(behaviour, method, strength, "select")]
        means[f"{strength:g}"] = _mean(rate(cell, thresholds, goal_of(method))["combined"])
    if not means:
        raise KeyError(f"no select cells for {behaviour}/{method}")
    best = max(means.values())
    chosen = min(float(s) for s, v in means.items() if v == best)
    return chosen, means


def _estimates(cell: Mapping[str, Any], rated: Mapping[str, list[float]],
               n_resamples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in RATED_SCORES:
        out[name] = bootstrap(rated[name], n_resamples=n_resamples).as_dict()
    for name in RAW_SCORES:
        if cell.get(name) is not None:
            out[f"raw_{name}"] = bootstrap(cell[name], n_resamples=n_resamples).as_dict()
    return out


def summarise(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per behaviour: thresholds, detection, and per method the chosen strength, its
    ``select`` means, its ``report`` estimates, the ``report`` curve over strengths and the
    paired difference against prompting."""
    cells = results["cells"]
    config = results["config"]
    n_resamples = int(config.get("n_resamples", 1000))
    methods = [_REFERENCE, *config["methods"]]
    out: dict[str, Any] = {}
    for behaviour in results["behaviours"]:
        thresholds = thresholds_for(cells, behaviour)
        rows: dict[str, Any] = {}
        ratings: dict[str, list[float]] = {}
        for method in methods:
            strengths = method_strengths(cells, behaviour, method, "report")
            if not strengths:
                continue
            chosen, select_means = choose_strength(cells, behaviour, method, thresholds)
            matched = None if METHODS.get(method) is None else METHODS[method].matched_to
            if matched in rows and rows[matched]["strength"] in strengths:
                chosen = rows[matched]["strength"]  # the same fraction of the norm
            cell = cells[_key(behaviour, method, chosen, "report")]
            rated = rate(cell, thresholds, goal_of(method))
            ratings[method] = rated["combined"]
            curve = {}
            for strength in strengths:
                at = rate(cells[_key(behaviour, method, strength, "report")], thresholds,
                          goal_of(method))
                curve[f"{strength:g}"] = {name: _mean(at[name]) for name in RATED_SCORES}
            rows[method] = {"strength": chosen, "laddered": len(strengths) > 1,
                            "select_combined": select_means,
                            "report": _estimates(cell, rated, n_resamples),
                            "curve": curve, "texts": cell["texts"], "goal": goal_of(method),
                            "matched_to": matched if matched in rows else None}
        if _PROMPTING in ratings:
            for method, combined in ratings.items():
                if method != _PROMPTING:
                    rows[method]["vs_prompting"] = paired_effect(
                        combined, ratings[_PROMPTING], metric=f"{method} - prompting",
                        n_resamples=n_resamples).to_dict()
        detected = cells.get(f"{behaviour}/detection")
        _judge(cells, behaviour, rows, ratings, n_resamples, detected)
        out[behaviour] = {"thresholds": thresholds.to_dict(), "methods": rows,
                          "detection": None if detected is None else {
                              k: detected[k] for k in ("auc", "folds", "layer", "n_pairs")}}
    return out


def _raw_concept(cell: Mapping[str, Any]) -> list[float]:
    return cell["vader"] if cell.get("vader") is not None else cell["concept"]


def _judge(cells: Mapping[str, Any], behaviour: str, rows: dict[str, Any],
           ratings: Mapping[str, list[float]], n_resamples: int,
           detected: Mapping[str, Any] | None) -> None:
    """Each row's effect, fluency cost, comparison with its goal's CAA row and detection
    (module docstring), in place."""
    for method, row in rows.items():
        if method == _REFERENCE:
            continue
        goal = row["goal"]
        baseline = _REFERENCE if goal == "raise" else _PROMPTING
        base = cells.get(_key(behaviour, baseline, 0.0, "report"))
        if base is None or method == baseline:
            continue
        cell = cells[_key(behaviour, method, row["strength"], "report")]
        scale = "VADER" if cell.get("vader") is not None else "concept words/100 tokens"
        row["baseline"] = baseline
        row["effect"] = paired_effect(_raw_concept(cell), _raw_concept(base),
                                      metric=f"{scale}, {method} - {baseline}",
                                      direction=1 if goal == "raise" else -1,
                                      n_resamples=n_resamples).to_dict()
        row["fluency_cost"] = paired_effect(cell["fluency"], base["fluency"],
                                            metric=f"log-likelihood/token, {method} - {baseline}",
                                            n_resamples=n_resamples).to_dict()
        reference = _CAA_ROW[goal]
        if method != reference and reference in ratings:
            row["vs_reference"] = paired_effect(
                ratings[method], ratings[reference], metric=f"{method} - {reference}",
                n_resamples=n_resamples).to_dict()
            other = cells[_key(behaviour, reference, rows[reference]["strength"], "report")]
            row["vs_reference_effect"] = paired_effect(
                _raw_concept(cell), _raw_concept(other),
                metric=f"{scale}, {method} - {reference}",
                direction=1 if goal == "raise" else -1, n_resamples=n_resamples).to_dict()
        found = METHODS.get(method)
        name = None if found is None else found.detection
        if detected is not None and name is not None:
            auc = (detected.get("auc") if name == "caa"
                   else detected.get("by_vector", {}).get(name, {}).get("auc"))
            if auc is not None:
                row["detection"] = {"vector": name, "auc": auc}
