"""The plain-text report of the expressed-behaviour comparison: tables of paired effects
with intervals, and the answer they give to the paper's question."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actsteer.effects import Effect
from actsteer.paper.multi_behaviour.expressed import analysis
from actsteer.paper.multi_behaviour.expressed.keys import TextKey
from actsteer.paper.multi_behaviour.expressed.plans import UNSTEERED
from actsteer.stats import Estimate

PLAN_TITLES = {"simultaneous": "simultaneous (own layers)",
               "combined-sum": "combined sum (own coefficients)",
               "combined-mean": "combined mean (paper)",
               "combined-weighted_mean": "combined weighted mean (paper)",
               "simultaneous-distinct": "simultaneous (distinct layers, paper)",
               "combined-sum@paper": "combined sum at the paper's layer"}


def _fx(found: Effect | None, digits: int = 2) -> str:
    return "-" if found is None else format(found, f".{digits}f")


def _est(found: Estimate | None, digits: int = 2, suffix: str = "") -> str:
    if found is None:
        return "-"
    return (f"{found.value:.{digits}f}{suffix} [{found.low:.{digits}f}, "
            f"{found.high:.{digits}f}]")


def _width(results: Mapping[str, Any]) -> int:
    return max(10, *(len(b) for b in results["behaviours"])) + 2


def individual_table(results: Mapping[str, Any]) -> list[str]:
    config, layers = results["config"], results["layers"]
    width = _width(results)
    combined = layers.get("combined")
    where = "at the combined layer" if combined is None else f"at L{combined}"
    lines = [f"each behaviour alone: Δ of its own propensity at {config['fraction']:g} of the "
             "median residual norm (paired against the unsteered model, nats [95% CI])",
             f"{'behaviour':<{width}}{'layer':>5}  {'add Δ':<26}{'verdict':<11}"
             f"{'subtract Δ':<26}{'slope per unit fraction':<28}{where + ' Δ':<24}"]
    lines.append("-" * len(lines[-1]))
    for name in results["behaviours"]:
        add = analysis.effect(results, f"individual:{name}", name)
        sub = analysis.effect(results, f"-individual:{name}", name, direction=-1)
        at_l = analysis.effect(results, f"individual@L:{name}", name)
        slope = analysis.steerability(results, name)
        slope_text = "-" if slope is None else (
            f"{slope.mean_slope.value:+.1f} [{slope.mean_slope.low:+.1f}, "
            f"{slope.mean_slope.high:+.1f}]")
        own = layers.get("own", {}).get(name, "-")
        own = f"{own}*" if own in _edges(results) else own
        lines.append(f"{name:<{width}}{own:>5}  {_fx(add):<26}"
                     f"{'-' if add is None else add.verdict:<11}{_fx(sub):<26}"
                     f"{slope_text:<28}{_fx(at_l):<24}")
    return lines


def _edges(results: Mapping[str, Any]) -> set[int]:
    candidates = results["layers"].get("candidates") or []
    return {min(candidates), max(candidates)} if len(candidates) > 1 else set()


def layers_lines(results: Mapping[str, Any]) -> list[str]:
    """Which layers were chosen, how, and what that implies for the comparison."""
    layers, config = results["layers"], results["config"]
    own, candidates = layers.get("own") or {}, layers.get("candidates") or []
    if not own or not candidates:
        return []
    lines = [f"layers: each behaviour's own layer chosen independently on {config['n_grid']} "
             f"grid prompts among {', '.join(map(str, candidates))} (largest lower bound of "
             f"its paired effect at {config['fraction']:g} of the norm; * = the grid's edge)"]
    edge = [f"{name} (L{layer})" for name, layer in own.items() if layer in _edges(results)]
    if edge:
        lines.append(f"  at the grid's edge: {', '.join(edge)}; a layer beyond the grid may "
                     "steer more")
    if len(set(own.values())) < len(own):
        shared = ", ".join(f"{n} L{x}" for n, x in own.items())
        distinct = layers.get("distinct") or {}
        lines.append(f"  own layers coincide ({shared}): the paper's design, distinct layers ("
                     + ", ".join(f"{n} L{x}" for n, x in distinct.items())
                     + "), is the labelled variant 'simultaneous (distinct layers, paper)'")
    combined, paper = layers.get("combined"), layers.get("paper")
    how = ("chosen by the same rule on the sum of every behaviour's propensity"
           if layers.get("combined_chosen") else "fixed by the config")
    lines.append(f"  combined vector: L{combined}, {how}" + (
        f"; the paper's layer (15 of 32, scaled) L{paper} is reported beside it"
        if paper is not None and paper != combined else ""))
    if results.get("corpus"):
        lines.append(f"  norms and perplexity measured on {results['corpus']}")
    return lines


def cross_talk_table(results: Mapping[str, Any]) -> list[str]:
    names = list(results["behaviours"])
    width = _width(results)
    matrix = analysis.cross_talk(results)
    lines = ["cross-talk: Δ of each column's propensity when the row's vector is added alone "
             "(diagonal: its own effect)",
             f"{'steered':<{width}}" + "".join(f"  {n:<24}" for n in names)]
    for steered in names:
        lines.append(f"{steered:<{width}}" + "".join(
            f"  {_fx(matrix[steered][m]):<24}" for m in names))
    return lines


def _title(results: Mapping[str, Any], plan: str) -> str:
    layers = results["layers"]
    where = {"combined-sum": layers.get("combined"), "combined-mean": layers.get("combined"),
             "combined-weighted_mean": layers.get("combined"),
             "combined-sum@paper": layers.get("paper")}.get(plan)
    return PLAN_TITLES[plan] + ("" if where is None else f" L{where}")


def comparison_table(results: Mapping[str, Any]) -> list[str]:
    width = _width(results)
    plan_width = max(len(_title(results, p)) for p in analysis.MULTI_PLANS) + 2
    lines = ["the paper's question: each behaviour under plans that steer every behaviour at "
             "once, Δ of its propensity and the share of its individual effect [95% CI]",
             f"{'behaviour':<{width}}{'plan':<{plan_width}}{'Δ [95% CI]':<26}share of individual"]
    lines.append("-" * (len(lines[-1]) + 10))
    for name in results["behaviours"]:
        for plan in analysis.MULTI_PLANS:
            found = analysis.effect(results, plan, name)
            if found is None:
                continue
            portion = analysis.share(results, plan, name)
            lines.append(f"{name:<{width}}{_title(results, plan):<{plan_width}}"
                         f"{_fx(found):<26}{_est(portion, 2, 'x')}")
    return lines


def decomposition_table(results: Mapping[str, Any]) -> list[str]:
    width = _width(results)
    parts = {name: analysis.decomposition(results, name) for name in results["behaviours"]}
    columns = list(next(iter(parts.values()), {}))
    lines = ["what separates them, paired on the behaviour's own propensity: layers = "
             "simultaneous − combined sum (the layer effect; paper L: against the combined sum "
             "at the paper's layer; distinct: the paper's design − combined sum); recipe = "
             "combined sum − combined mean (one layer, same total norm: the recipe effect)",
             f"{'behaviour':<{width}}" + "".join(f"{c:<27}" for c in columns)]
    for name, found in parts.items():
        lines.append(f"{name:<{width}}" + "".join(f"{_fx(found.get(c)):<27}" for c in columns))
    return lines


def tax_table(results: Mapping[str, Any]) -> list[str]:
    plans = [UNSTEERED, *(f"individual:{b}" for b in results["behaviours"]),
             *analysis.MULTI_PLANS]
    rows = [(p, analysis.perplexity(results, p), analysis.perplexity_ratio(results, p))
            for p in plans]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return []
    n = rows[0][1].n if rows[0][1] is not None else 0
    lines = [f"cost: perplexity on {n} text documents [95% CI], and its ratio to the "
             "unsteered model's (paired over documents)",
             f"{'plan':<26}{'perplexity':<32}x unsteered"]
    for plan, ppl, ratio in rows:
        lines.append(f"{plan:<26}{_est(ppl, 1):<32}{'-' if plan == UNSTEERED else _est(ratio)}")
    return lines


def text_table(results: Mapping[str, Any]) -> list[str]:
    found = [(p, analysis.text_effect(results, p))
             for p in ("individual:sentiment", "-individual:sentiment", *analysis.MULTI_PLANS)]
    found = [(p, f) for p, f in found if f is not None]
    if not found:
        return []
    base = results["cells"][str(TextKey(UNSTEERED))]
    lines = [f"generated text ({len(base['compound'])} greedy continuations of "
             f"{results['config']['generate_tokens']} tokens): VADER compound sentiment, "
             f"unsteered mean {sum(base['compound']) / len(base['compound']):+.2f}",
             f"{'plan':<34}{'mean':>6}  Δ [95% CI]"]
    for plan, (mean, change) in found:  # type: ignore[misc]
        lines.append(f"{plan:<34}{mean:>+6.2f}  {_fx(change)}")
    return lines


def cosine_lines(results: Mapping[str, Any]) -> list[str]:
    cosines = results.get("cosines") or {}
    if not cosines:
        return []
    return ["cosine between the behaviours' vectors: " + ", ".join(
        f"{pair} {value:+.2f}" for pair, value in cosines.items())]


def answer(results: Mapping[str, Any]) -> list[str]:
    """The paper's question answered from the intervals, in a few sentences."""
    names = list(results["behaviours"])
    moving = [b for b in names
              if (found := analysis.effect(results, f"individual:{b}", b)) is not None
              and found.verdict == "moves"]
    lines = [f"answer on this model: {len(moving)} of {len(names)} behaviours move alone "
             f"({', '.join(moving) or 'none'})."]
    layers = results["layers"]
    sides = {analysis.LAYER_EFFECT: (
                 f"layer effect (simultaneous at own layers − combined sum at "
                 f"L{layers.get('combined')}, same strengths)", "own layers", "one layer"),
             "layers (paper L)": (f"at the paper's layer (− combined sum at "
                                  f"L{layers.get('paper')})", "own layers", "one layer"),
             "layers (distinct)": ("the paper's design (simultaneous at distinct layers − "
                                   "combined sum)", "distinct layers", "one layer"),
             analysis.RECIPE_EFFECT: ("recipe effect (combined sum − combined mean, the "
                                      "paper's recipe; one layer, matched norm)",
                                      "own coefficients", "the paper's mean"),
             "recipe (weighted)": ("with the paper's weighted mean", "own coefficients",
                                   "the weighted mean")}
    for column, (title, first, second) in sides.items():
        parts = [(b, analysis.decomposition(results, b).get(column)) for b in names]
        present = [(b, p) for b, p in parts if p is not None]
        if not present:
            continue
        said = {"moves": f"{first} more", "reversed": f"{second} more",
                "no effect": "no difference resolved"}
        lines.append(f"  {title}: " + "; ".join(
            f"{b} {format(p, '.2f')} ({said[p.verdict]})" for b, p in present))
    if not moving:
        lines.append("  without an individual effect there is no share to compare; the "
                     "tables above report the plans' effects for completeness")
        return lines
    for plan in analysis.MULTI_PLANS:
        shares = [(b, analysis.share(results, plan, b)) for b in moving]
        kept = [(b, s) for b, s in shares if s is not None]
        if not kept:
            continue
        verdicts = [analysis.effect(results, plan, b) for b in moving]
        moved = sum(1 for v in verdicts if v is not None and v.verdict == "moves")
        span = f"{min(s.value for _, s in kept):.2f}-{max(s.value for _, s in kept):.2f}x"
        lines.append(f"  {_title(results, plan)}: moves {moved} of {len(moving)}, keeping {span} "
                     "of the individual effects")
    alone = [r for b in moving if (r := analysis.perplexity_ratio(results, f"individual:{b}"))]
    together = [r for p in analysis.MULTI_PLANS
                if (r := analysis.perplexity_ratio(results, p)) is not None]
    if alone and together:
        lines.append(f"  cost: each alone {min(r.value for r in alone):.2f}-"
                     f"{max(r.value for r in alone):.2f}x the unsteered perplexity, all at once "
                     f"{min(r.value for r in together):.2f}-{max(r.value for r in together):.2f}x")
    return lines


def summary_table(results: Mapping[str, Any]) -> str:
    """The full plain-text report of an expressed-behaviour run."""
    config = results["config"]
    n_test = config.get("n_test")
    lines = [f"expressed behaviours: word-set propensity (log next-token mass on the "
             f"behaviour's words minus on its contrast words) after {n_test} held-out neutral "
             "prompts", ""]
    for block in (layers_lines, individual_table, cross_talk_table, comparison_table,
                  decomposition_table, tax_table, text_table, cosine_lines, answer):
        found = block(results)
        if found:
            lines += [*found, ""]
    return "\n".join(lines).rstrip()
