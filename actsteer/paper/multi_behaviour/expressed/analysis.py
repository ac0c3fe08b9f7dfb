"""Numbers derived from an expressed-behaviour results file: paired effects, shares of the
individual effect, cross-talk, the layer/recipe decomposition, the perplexity cost and
the VADER score of generated text. Everything is recomputed from the per-prompt values
stored in the cells, so a report can be made again from the file alone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from actsteer.effects import Effect, paired_effect
from actsteer.paper.multi_behaviour.expressed.keys import (
    NO_INSTRUCTION,
    ScaffoldKey,
    ScaffoldTaxKey,
    TaxKey,
    TestKey,
    TextKey,
    row_cell,
)
from actsteer.paper.multi_behaviour.expressed.plans import UNSTEERED, steer_plan
from actsteer.stats import Estimate, bootstrap, paired_bootstrap
from actsteer.steerability import SteerabilitySummary, propensity_slopes, summarize_steerability

MULTI_PLANS = ("simultaneous", "combined-sum", "combined-mean", "combined-weighted_mean",
               "simultaneous-distinct", "combined-sum@paper")
"""The plans that steer every behaviour at once, in report order (the last two are scored
only when they differ from the others: own layers that coincide, a combined layer other
than the paper's)."""

LAYER_EFFECT = "layers"
RECIPE_EFFECT = "recipe (mean)"
"""The two headline differences of :func:`decomposition` (the answer reports both)."""


def _resamples(results: Mapping[str, Any]) -> int:
    return int(results["config"].get("n_resamples", 1000))


def values(results: Mapping[str, Any], plan: str, metric: str) -> torch.Tensor | None:
    """Per test prompt: ``metric``'s propensity under ``plan`` (None if not scored)."""
    cell = results["cells"].get(str(TestKey(plan)))
    return None if cell is None else torch.tensor(cell["values"][metric], dtype=torch.float64)


def effect(results: Mapping[str, Any], plan: str, metric: str, *, against: str = UNSTEERED,
           direction: int = 1) -> Effect | None:
    """Paired effect of ``plan`` against ``against`` (default unsteered) on ``metric``."""
    treated, base = values(results, plan, metric), values(results, against, metric)
    if treated is None or base is None:
        return None
    return paired_effect(treated, base, metric=metric, direction=direction,
                         n_resamples=_resamples(results))


def share(results: Mapping[str, Any], plan: str, behaviour: str) -> Estimate | None:
    """``plan``'s effect on ``behaviour`` as a share of the behaviour's individual effect
    (its own vector alone at its own layer), with a paired-bootstrap interval over prompts;
    None when either is missing or the individual effect's interval includes 0."""
    own = effect(results, f"individual:{behaviour}", behaviour)
    base = values(results, UNSTEERED, behaviour)
    treated = values(results, plan, behaviour)
    alone = values(results, f"individual:{behaviour}", behaviour)
    if own is None or own.verdict != "moves" or base is None or treated is None or alone is None:
        return None
    return paired_bootstrap(treated - base, alone - base,
                            statistic=lambda a, b: a.mean(-1) / b.mean(-1),
                            n_resamples=_resamples(results))


def steerability(results: Mapping[str, Any], behaviour: str) -> SteerabilitySummary | None:
    """Per-prompt slopes of ``behaviour``'s propensity against the fraction of the norm at
    its own layer (Tan et al. 2024), summarised with intervals."""
    config = results["config"]
    fractions = sorted(float(f) for f in (config.get("steerability_fractions") or (
        -config["fraction"], 0.0, config["fraction"])))
    rows = []
    for fraction in fractions:
        found = values(results, steer_plan(behaviour, fraction, float(config["fraction"])),
                       behaviour)
        if found is None:
            return None
        rows.append(found)
    slopes = propensity_slopes(torch.stack(rows), fractions)
    return summarize_steerability(slopes, n_resamples=_resamples(results))


def cross_talk(results: Mapping[str, Any]) -> dict[str, dict[str, Effect | None]]:
    """``[steered behaviour][measured behaviour]``: effect of a behaviour's vector alone on
    every behaviour's propensity (the diagonal is its own effect)."""
    names = list(results["behaviours"])
    return {steered: {measured: effect(results, f"individual:{steered}", measured)
                      for measured in names} for steered in names}


def decomposition(results: Mapping[str, Any], behaviour: str) -> dict[str, Effect | None]:
    """Paired differences on ``behaviour``'s propensity that isolate one change each:

    * ``layers`` = simultaneous − combined-sum (same strengths, own layers vs one layer:
      the layer effect); ``layers (paper L)`` the same against combined-sum at the paper's
      layer, ``layers (distinct)`` = simultaneous-distinct − combined-sum (the paper's
      design), each present when that plan was scored;
    * ``recipe (mean)`` = combined-sum − combined-mean and ``recipe (weighted)`` =
      combined-sum − combined-weighted_mean (one layer, same total norm, each behaviour's
      own coefficient vs the paper's one shared coefficient: the recipe effect).
    """
    out: dict[str, Effect | None] = {
        LAYER_EFFECT: effect(results, "simultaneous", behaviour, against="combined-sum")}
    for name, plan, against in (("layers (paper L)", "simultaneous", "combined-sum@paper"),
                                ("layers (distinct)", "simultaneous-distinct", "combined-sum")):
        found = effect(results, plan, behaviour, against=against)
        if found is not None:
            out[name] = found
    for recipe, name in (("mean", RECIPE_EFFECT), ("weighted_mean", "recipe (weighted)")):
        out[name] = effect(results, "combined-sum", behaviour, against=f"combined-{recipe}")
    return out


def perplexity(results: Mapping[str, Any], plan: str) -> Estimate | None:
    """Perplexity on the tax text under ``plan``: exp(token-weighted mean NLL) [CI]."""
    cell = results["cells"].get(str(TaxKey(plan)))
    if cell is None:
        return None
    nll = torch.tensor(cell["nll"], dtype=torch.float64)
    tokens = torch.tensor(cell["tokens"], dtype=torch.float64)
    mean = bootstrap(nll / tokens.clamp_min(1), weights=tokens, n_resamples=_resamples(results))
    return Estimate(math.exp(mean.value), math.exp(mean.low), math.exp(mean.high), mean.n)


def perplexity_ratio(results: Mapping[str, Any], plan: str) -> Estimate | None:
    """Perplexity under ``plan`` over the unsteered model's, with a paired interval over
    documents (the same documents under both)."""
    return _nll_ratio(results, results["cells"].get(str(TaxKey(plan))),
                      results["cells"].get(str(TaxKey(UNSTEERED))))


def _nll_ratio(results: Mapping[str, Any], cell: Mapping[str, Any] | None,
               base: Mapping[str, Any] | None) -> Estimate | None:
    if cell is None or base is None:
        return None
    tokens = torch.tensor(base["tokens"], dtype=torch.float64)
    extra = (torch.tensor(cell["nll"], dtype=torch.float64)
             - torch.tensor(base["nll"], dtype=torch.float64))
    # exp(sum of extra NLL / sum of tokens): a token-weighted mean, resampled over documents
    mean = bootstrap(extra / tokens.clamp_min(1), weights=tokens, n_resamples=_resamples(results))
    return Estimate(math.exp(mean.value), math.exp(mean.low), math.exp(mean.high), mean.n)


def text_effect(results: Mapping[str, Any], plan: str) -> tuple[float, Effect] | None:
    """Mean VADER compound score of ``plan``'s generated continuations and its paired
    effect against the unsteered continuations of the same prompts."""
    cell = results["cells"].get(str(TextKey(plan)))
    base = results["cells"].get(str(TextKey(UNSTEERED)))
    if cell is None or base is None:
        return None
    steered = torch.tensor(cell["compound"], dtype=torch.float64)
    found = paired_effect(steered, torch.tensor(base["compound"], dtype=torch.float64),
                          metric="vader_compound", n_resamples=_resamples(results))
    return float(steered.mean()), found


def scaffold_values(results: Mapping[str, Any], row: str, behaviour: str, metric: str
                    ) -> torch.Tensor | None:
    """Per test prompt: ``metric``'s propensity in ``row``'s scaffold under its plan
    (:data:`~actsteer.paper.multi_behaviour.expressed.prompting.ROWS`; ``"baseline"``: the
    scaffold without instruction, unsteered), None if not scored."""
    scaffold, plan = ((NO_INSTRUCTION, UNSTEERED) if row == "baseline"
                      else row_cell(row, behaviour))
    cell = results["cells"].get(str(ScaffoldKey(scaffold, plan)))
    return None if cell is None else torch.tensor(cell["values"][metric], dtype=torch.float64)


def row_effect(results: Mapping[str, Any], row: str, behaviour: str,
               metric: str | None = None) -> Effect | None:
    """Paired effect of ``row`` for ``behaviour`` (steering, prompting or both) on
    ``metric``'s propensity (default: the behaviour's own) against the scaffold without
    instruction, unsteered, on the same prompts."""
    metric = metric or behaviour
    treated = scaffold_values(results, row, behaviour, metric)
    base = scaffold_values(results, "baseline", behaviour, metric)
    if treated is None or base is None:
        return None
    return paired_effect(treated, base, metric=metric, n_resamples=_resamples(results))


def steering_minus_prompting(results: Mapping[str, Any], behaviour: str) -> Effect | None:
    """The per-prompt difference steering − prompting on the behaviour's own propensity,
    paired (each prompt's steered value minus its prompted value), with its interval:
    "moves" reads as steering moves it more than prompting."""
    steered = scaffold_values(results, "steering", behaviour, behaviour)
    prompted = scaffold_values(results, "prompting", behaviour, behaviour)
    if steered is None or prompted is None:
        return None
    return paired_effect(steered, prompted, metric=behaviour, n_resamples=_resamples(results))


def fluency_ratio(results: Mapping[str, Any], row: str, behaviour: str) -> Estimate | None:
    """Perplexity of the text's documents under ``row`` (each after its scaffold, only the
    document scored) over the same under the scaffold without instruction, unsteered,
    with a paired interval over documents."""
    cells = results["cells"]
    return _nll_ratio(results, cells.get(str(ScaffoldTaxKey(*row_cell(row, behaviour)))),
                      cells.get(str(ScaffoldTaxKey(NO_INSTRUCTION, UNSTEERED))))
