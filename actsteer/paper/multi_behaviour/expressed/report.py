"""The plain-text report of the expressed-behaviour comparison: tables of paired effects
with intervals, and the answer they give to the paper's question."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actsteer.effects import Effect
from actsteer.paper.multi_behaviour.expressed import analysis
from actsteer.paper.multi_behaviour.expressed.keys import ROWS, TextKey
from actsteer.paper.multi_behaviour.expressed.plans import UNSTEERED
from actsteer.report_table import Lines, Report, Table
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


def individual_table(results: Mapping[str, Any]) -> Table:
    config, layers = results["config"], results["layers"]
    combined = layers.get("combined")
    where = "at the combined layer" if combined is None else f"at L{combined}"
    rows = []
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
        rows.append((name, str(own), _fx(add), "-" if add is None else add.verdict, _fx(sub),
                     slope_text, _fx(at_l)))
    return Table(f"each behaviour alone: Δ of its own propensity at {config['fraction']:g} of "
                 "the median residual norm (paired against the unsteered model, nats [95% CI])",
                 ("behaviour", "layer", "add Δ", "verdict", "subtract Δ",
                  "slope per unit fraction", where + " Δ"), tuple(rows))


def _edges(results: Mapping[str, Any]) -> set[int]:
    candidates = results["layers"].get("candidates") or []
    return {min(candidates), max(candidates)} if len(candidates) > 1 else set()


def layers_lines(results: Mapping[str, Any]) -> Lines:
    """Which layers were chosen, how, and what that implies for the comparison."""
    layers, config = results["layers"], results["config"]
    own, candidates = layers.get("own") or {}, layers.get("candidates") or []
    if not own or not candidates:
        return Lines(())
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
    return Lines(tuple(lines))


def cross_talk_table(results: Mapping[str, Any]) -> Table:
    names = list(results["behaviours"])
    matrix = analysis.cross_talk(results)
    return Table("cross-talk: Δ of each column's propensity when the row's vector is added "
                 "alone (diagonal: its own effect)", ("steered", *names),
                 tuple((steered, *(_fx(matrix[steered][m]) for m in names))
                       for steered in names))


def _title(results: Mapping[str, Any], plan: str) -> str:
    layers = results["layers"]
    where = {"combined-sum": layers.get("combined"), "combined-mean": layers.get("combined"),
             "combined-weighted_mean": layers.get("combined"),
             "combined-sum@paper": layers.get("paper")}.get(plan)
    return PLAN_TITLES[plan] + ("" if where is None else f" L{where}")


def comparison_table(results: Mapping[str, Any]) -> Table:
    rows = []
    for name in results["behaviours"]:
        for plan in analysis.MULTI_PLANS:
            found = analysis.effect(results, plan, name)
            if found is not None:
                rows.append((name, _title(results, plan), _fx(found),
                             _est(analysis.share(results, plan, name), 2, "x")))
    return Table("the paper's question: each behaviour under plans that steer every behaviour "
                 "at once, Δ of its propensity and the share of its individual effect [95% CI]",
                 ("behaviour", "plan", "Δ [95% CI]", "share of individual"), tuple(rows))


def decomposition_table(results: Mapping[str, Any]) -> Table:
    parts = {name: analysis.decomposition(results, name) for name in results["behaviours"]}
    columns = list(next(iter(parts.values()), {}))
    return Table("what separates them, paired on the behaviour's own propensity: layers = "
                 "simultaneous − combined sum (the layer effect; paper L: against the combined "
                 "sum at the paper's layer; distinct: the paper's design − combined sum); "
                 "recipe = combined sum − combined mean (one layer, same total norm: the recipe "
                 "effect)", ("behaviour", *columns),
                 tuple((name, *(_fx(found.get(c)) for c in columns))
                       for name, found in parts.items()))


def tax_table(results: Mapping[str, Any]) -> Table | None:
    plans = [UNSTEERED, *(f"individual:{b}" for b in results["behaviours"]),
             *analysis.MULTI_PLANS]
    found = [(p, analysis.perplexity(results, p), analysis.perplexity_ratio(results, p))
             for p in plans]
    rows = [(p, ppl, ratio) for p, ppl, ratio in found if ppl is not None]
    if not rows:
        return None
    return Table(f"cost: perplexity on {rows[0][1].n} text documents [95% CI], and its ratio "
                 "to the unsteered model's (paired over documents)",
                 ("plan", "perplexity", "x unsteered"),
                 tuple((plan, _est(ppl, 1), "-" if plan == UNSTEERED else _est(ratio))
                       for plan, ppl, ratio in rows))


def text_table(results: Mapping[str, Any]) -> Table | None:
    found = [(p, analysis.text_effect(results, p))
             for p in ("individual:sentiment", "-individual:sentiment", *analysis.MULTI_PLANS)]
    scored = [(p, f) for p, f in found if f is not None]
    if not scored:
        return None
    base = results["cells"][str(TextKey(UNSTEERED))]
    return Table(f"generated text ({len(base['compound'])} greedy continuations of "
                 f"{results['config']['generate_tokens']} tokens): VADER compound sentiment, "
                 f"unsteered mean {sum(base['compound']) / len(base['compound']):+.2f}",
                 ("plan", "mean", "Δ [95% CI]"),
                 tuple((plan, f"{mean:+.2f}", _fx(change)) for plan, (mean, change) in scored))


def cosine_lines(results: Mapping[str, Any]) -> Lines:
    cosines = results.get("cosines") or {}
    if not cosines:
        return Lines(())
    return Lines(("cosine between the behaviours' vectors: " + ", ".join(
        f"{pair} {value:+.2f}" for pair, value in cosines.items()),))


VERSUS = {"moves": "steering more", "reversed": "prompting more",
          "no effect": "no difference resolved"}
"""How the verdict of steering − prompting reads."""


def prompting_blocks(results: Mapping[str, Any]) -> list[Table | Lines]:
    """Steering, prompting and both in the chat scaffold, each with its fluency cost, the
    paired steering − prompting difference, the cross-talk of every row, and what it shows
    (nothing for a results file made before prompting rows were scored)."""
    found = results.get("prompting") or {}
    instructions = found.get("instructions") or {}
    names = [b for b in results["behaviours"]
             if analysis.row_effect(results, "steering", b) is not None]
    if not names:
        return []
    rows: list[tuple[str, ...]] = []
    crossed: list[tuple[str, ...]] = []
    versus: dict[str, Effect | None] = {}
    for name in names:
        for row in ROWS:
            change = analysis.row_effect(results, row, name)
            if change is not None:
                rows.append((name, row, _fx(change), change.verdict,
                             _est(analysis.fluency_ratio(results, row, name))))
            crossed.append((f"{row}:{name}", *(_fx(analysis.row_effect(results, row, name, m))
                                               for m in results["behaviours"])))
        difference = versus[name] = analysis.steering_minus_prompting(results, name)
        if difference is not None:
            rows.append((name, "steering − prompting", _fx(difference),
                         VERSUS[difference.verdict], "-"))
    missing = [b for b in names if not instructions.get(b)]
    lines = ["instructions (the user turn is "
             f"{found.get('request', '')!r}, then the instruction): " + "; ".join(
                 f"{b} {instructions[b]!r}" for b in names if instructions.get(b))]
    if missing:
        lines.append(f"  no instruction, so no prompting rows: {', '.join(missing)} (give "
                     "its behaviour file an \"instruction\", docs/behaviours.md)")
    said = {v: [b for b, e in versus.items() if e is not None and VERSUS[e.verdict] == v]
            for v in VERSUS.values()}
    lines.append("  steering − prompting, paired per prompt on the behaviour's own propensity: "
                 + "; ".join(f"{v} for {', '.join(bs)}" for v, bs in said.items() if bs) + ".")
    costs = {row: [r.value for b in names if (r := analysis.fluency_ratio(results, row, b))]
             for row in ROWS}
    if all(costs.values()):
        lines.append("  fluency: " + ", ".join(f"{row} {min(c):.2f}-{max(c):.2f}x" for row, c
                                               in costs.items())
                     + " the unprompted, unsteered perplexity.")
    table = Table("prompting vs steering: in a chat scaffold (a user turn, then the neutral "
                  "opening as the start of the answer), Δ of the behaviour's own propensity "
                  "against the same scaffold without instruction, unsteered (paired, nats "
                  "[95% CI]); fluency: perplexity of the text after the same scaffold, only "
                  "its tokens scored, x the unprompted unsteered one [95% CI]",
                  ("behaviour", "row", "Δ [95% CI]", "verdict", "fluency (x perplexity)"),
                  tuple(rows))
    cross = Table("prompting vs steering, cross-talk: Δ of each column's propensity under "
                  "each row (scaffold, paired against the scaffold without instruction)",
                  ("row", *results["behaviours"]),
                  tuple(r for r in crossed if any(c != "-" for c in r[1:])))
    return [table, cross, Lines(tuple(lines))]


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


def report_tables(results: Mapping[str, Any]) -> Report:
    """The report of an expressed-behaviour run as a value: aligned text when printed, HTML
    tables in a notebook (:mod:`actsteer.report_table`)."""
    n_test = results["config"].get("n_test")
    blocks: list[Table | Lines | None] = [Lines((
        f"expressed behaviours: word-set propensity (log next-token mass on the behaviour's "
        f"words minus on its contrast words) after {n_test} held-out neutral prompts",))]
    blocks += [layers_lines(results), individual_table(results), cross_talk_table(results),
               comparison_table(results), decomposition_table(results), tax_table(results),
               text_table(results), cosine_lines(results),
               *prompting_blocks(results), Lines(tuple(answer(results)))]
    return Report(tuple(b for b in blocks if b is not None and str(b)))


def summary_table(results: Mapping[str, Any]) -> str:
    """The full plain-text report of an expressed-behaviour run (``str`` of
    :func:`report_tables`)."""
    return str(report_tables(results))
