"""Surgery and activation steering on equal terms: one behaviour, one set of items, one
measurement, every arm (:mod:`actsteer.paper.surgery_vs_steering.arms`) at a ladder of strengths.

For each arm and strength, against the unedited, unsteered model on the same items:

* **behaviour** — the word-set propensity after held-out prompts
  (:func:`actsteer.likelihood.word_propensities`), paired Δ [95% CI] and its verdict
  against the intended direction (:func:`actsteer.effects.paired_effect`);
* **steerability** — per-item slope of the propensity against strength over the
  symmetric ladder (``-s ... 0 ... +s``, Tan et al. 2024), mean with its interval;
* **text** — a score of greedy continuations of some prompts, paired Δ, only when the
  caller gives ``text_score`` (e.g. :func:`vader_compound` for sentiment: no one score
  fits every behaviour, so none is assumed);
* **cost** — perplexity on text [CI] and its paired ratio to the unsteered model's, and
  the paired Δ of next-token top-1 (:func:`actsteer.accuracy.accuracy_sweep`);
* **speed** — new tokens per second of greedy generation (:func:`actsteer.generate`'s
  batched, KV-cached loop) with a steering hook, with the surgery-edited weights and no
  hook, and on the plain model, timed in interleaved rounds after an untimed warm-up,
  median of the rounds (and the median per-round ratio to the plain model, which the
  load of a shared machine disturbs less). One arm of each kind is timed (the first
  given): a hook costs the same whatever it adds, an edit nothing at inference.

**Matched effect.** Strengths of different arms are in different units, so besides the
ladders each arm is measured again at the strength where its ladder reaches a common
target effect (:mod:`actsteer.paper.surgery_vs_steering.matching`: by default the largest
significant effect of the weakest arm that is not a control, else a fixed ``target``), linearly
interpolated between ladder points; the effect and cost at that strength are measured,
not interpolated.

**Sign audit.** With ``audit_items`` (e.g. the behaviour's extraction completions), each
arm's effect at its largest strength on their continuation propensity (log P(behaviour
completion) − log P(contrast completion)) is reported too: that the arm moves the data it
was made from the intended way, next to whether it moves held-out prompts.

Example::

    arms = build_arms(model, behaviour.pairs(), layer=18, norms=norms, direction=1)
    result = compare(model, arms.arms, behaviour.words, prompts, direction=1,
                     ladders={"steer:probe": (0.1, 0.25), "steer:caa": (0.1, 0.25),
                              "surgery": (4.0, 8.0)}, documents=documents)
    print(result.table())
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from actsteer.accuracy import DocumentAccuracy, Documents, accuracy_sweep
from actsteer.batching import encode_many
from actsteer.contrast import ContrastItem, WordSets
from actsteer.effects import Effect, paired_effect
from actsteer.errors import InvalidValueError
from actsteer.generation import generate_tokens as generate_ids
from actsteer.likelihood import continuation_propensities, counted_words, word_propensities
from actsteer.paper.surgery_vs_steering.arms import Arm, check_ladder, score_points
from actsteer.paper.surgery_vs_steering.comparison import Comparison, Row
from actsteer.paper.surgery_vs_steering.matching import common_target, matched_strength
from actsteer.plan import SteeringPlan
from actsteer.stats import Estimate, bootstrap, percentile_interval, resample_indices, resampled
from actsteer.steerability import SteerabilitySummary, propensity_slopes, summarize_steerability

__all__ = ["Comparison", "Row", "compare", "generation_throughput", "vader_compound"]


logger = logging.getLogger(__name__)


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER's compound sentiment score (−1 … +1) of each text (Hutto & Gilbert 2014; its
    own lexicon, no download)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


def generation_throughput(model: Any, points: Sequence[tuple[Arm, float]],
                          prompts: Sequence[str], *, max_new_tokens: int = 24,
                          repeats: int = 3, batch_size: int | None = None
                          ) -> list[list[float]]:
    """New tokens/s of greedy generation of ``prompts`` (``max_new_tokens`` each, EOS
    ignored) on the plain model and at each ``(arm, strength)``: one list of per-round
    rates for ``[plain, *points]``.

    Every configuration runs once untimed, then ``repeats`` interleaved rounds (each round
    runs all of them in turn, so load from other processes hits all alike). A surgery's
    edit is applied before and reverted after its timed call, so only generation with the
    edited weights is timed.
    """
    if repeats < 1:
        raise InvalidValueError(f"repeats must be >= 1, got {repeats}")
    if not prompts:
        raise InvalidValueError("throughput needs at least one prompt")
    sequences = encode_many(model, list(prompts))
    configs: list[tuple[Arm | None, float]] = [(None, 0.0), *points]
    rates: list[list[float]] = [[] for _ in configs]
    for round_ in range(repeats + 1):
        for index, (arm, strength) in enumerate(configs):
            with contextlib.ExitStack() as stack:
                plan = None if arm is None else stack.enter_context(arm.applied(model, strength))
                start = time.perf_counter()
                ids = generate_ids(model, sequences, plan, max_new_tokens=max_new_tokens,
                                   stop_at_eos=False, batch_size=batch_size)
                elapsed = time.perf_counter() - start
            if round_ > 0:  # round 0 warms up
                rates[index].append(sum(len(row) for row in ids) / elapsed)
    return rates


def _paired_docs(a: Tensor, b: Tensor, tokens: Tensor,
                 statistic: Callable[[Tensor, Tensor, Tensor], Tensor], *,
                 n_resamples: int, seed: int) -> Estimate:
    """A statistic of two per-document measurements and the documents' token counts,
    with a bootstrap over documents that keeps each document's three numbers together."""
    a, b, tokens = (x.double().flatten() for x in (a, b, tokens))
    idx = resample_indices(a.numel(), n_resamples, seed)
    draws = statistic(resampled(a, idx), resampled(b, idx), resampled(tokens, idx))
    low, high = percentile_interval(draws)
    return Estimate(float(statistic(a, b, tokens)), low, high, int(a.numel()))


def _perplexity_ratio(a: Tensor, b: Tensor, tokens: Tensor) -> Tensor:
    return torch.exp((a.sum(-1) - b.sum(-1)) / tokens.sum(-1))


def _top1_delta(a: Tensor, b: Tensor, tokens: Tensor) -> Tensor:
    return (a.sum(-1) - b.sum(-1)) / tokens.sum(-1)


def _continuations(model: Any, sequences: list[list[int]], plan: SteeringPlan,
                   max_new_tokens: int) -> tuple[str, ...]:
    """Greedy continuations (exactly ``max_new_tokens`` each: EOS does not stop a row)."""
    ids = generate_ids(model, sequences, plan, max_new_tokens=max_new_tokens, stop_at_eos=False)
    return tuple(str(model.tokenizer.decode(row, skip_special_tokens=True)) for row in ids)


def _label(arm: str, strength: float) -> str:
    return f"{arm}@{strength:.4g}"


def compare(
    model: Any,
    arms: Mapping[str, Arm],
    words: WordSets,
    prompts: Sequence[str],
    *,
    ladders: Mapping[str, Sequence[float]],
    direction: int = 1,
    documents: Documents | None = None,
    generate_prompts: Sequence[str] = (),
    generate_tokens: int = 24,
    text_score: Callable[[Sequence[str]], list[float]] | None = None,
    throughput_repeats: int = 3,
    audit_items: Sequence[ContrastItem] = (),
    target: float | None = None,
    batch_size: int = 24,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> Comparison:
    """Measure every arm on the same items (see the module docstring).

    Args:
        arms: name -> :class:`~actsteer.paper.surgery_vs_steering.arms.SteeringArm` or
            :class:`~actsteer.paper.surgery_vs_steering.arms.SurgeryArm` (e.g.
            ``build_arms(...).arms``).
        words: the behaviour's word sets; ``prompts`` the held-out prompts read after.
        ladders: per arm, its positive strengths (the negatives are measured too, for
            slopes); every arm needs one.
        direction: +1 if positive strengths are meant to raise the propensity, −1 lower.
        documents: text for perplexity and top-1 (``None``: cost not measured).
        generate_prompts: prompts continued greedily for the text score and for
            throughput (empty: neither is measured).
        text_score: scores generated texts, one number each, higher meaning more of the
            behaviour (e.g. :func:`vader_compound`, for sentiment only); ``None`` (the
            default): no text is generated for scoring.
        throughput_repeats: timed rounds of :func:`generation_throughput` (0: skip), for
            the plain model and the first arm of each kind, each at its matched strength
            (else its largest).
        audit_items: items for the sign audit (empty: no audit).
        target: a fixed effect to match (intended direction, > 0); ``None``: the weakest
            arm's reach
            (:func:`~actsteer.paper.surgery_vs_steering.matching.common_target`), control
            arms (``arm.control``) left out.
    """
    if direction not in (1, -1):
        raise InvalidValueError(f"direction must be +1 or -1, got {direction!r}")
    if not arms:
        raise InvalidValueError("give at least one arm to compare")
    missing = sorted(set(arms) - set(ladders))
    if missing:
        raise InvalidValueError(f"no ladder for arms {missing}; give each arm its strengths")
    if target is not None and not (math.isfinite(target) and target > 0):
        raise InvalidValueError(f"target must be a positive effect in the intended direction "
                                f"or None, got {target!r}")
    if not prompts:
        raise InvalidValueError("give at least one held-out prompt")
    if throughput_repeats < 0:
        raise InvalidValueError(f"throughput_repeats must be >= 0, got {throughput_repeats}")
    steps = {name: check_ladder(name, ladders[name]) for name in arms}
    text_metric = ("" if text_score is None else "VADER" if text_score is vader_compound
                   else getattr(text_score, "__name__", "text score"))
    boot: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}

    def propensity(points: Sequence[tuple[Arm, float]], desc: str) -> list[Tensor]:
        def measure(plans: list[SteeringPlan]) -> list[Tensor]:
            scored = word_propensities(model, prompts, [words], plans, batch_size=batch_size,
                                       progress=progress, desc=desc)[words.name].summed
            return list(scored)

        return score_points(model, points, measure)

    # 1. the ladders, both signs, for effects and slopes
    ladder_points = [(arms[name], sign * s) for name in arms for s in steps[name]
                     for sign in (-1, 1)]
    logger.info("behaviour: %d ladder points on %d prompts", len(ladder_points), len(prompts))
    scored = propensity(ladder_points, "ladders")
    base, values = scored[0], dict(zip([_label(a.name, s) for a, s in ladder_points],
                                       scored[1:], strict=True))
    slopes: dict[str, SteerabilitySummary] = {}
    effects: dict[str, list[Effect]] = {}
    for name in arms:
        rungs = [-s for s in reversed(steps[name])] + [0.0] + list(steps[name])
        stacked = torch.stack([base if s == 0 else values[_label(name, s)] for s in rungs])
        slopes[name] = summarize_steerability(propensity_slopes(stacked, rungs), **boot)
        effects[name] = [paired_effect(values[_label(name, s)], base, metric=words.name,
                                       direction=direction, **boot) for s in steps[name]]

    # 2. the common target and each arm's matched strength, then measured there
    reach = {name: max((direction * e.value for e in effects[name] if e.verdict == "moves"),
                       default=None) for name in arms}
    methods = {name: r for name, r in reach.items() if not arms[name].control}
    goal = target if target is not None else common_target(methods)
    rule = ("fixed" if target is not None else
            "none: no arm moves the behaviour" if goal is None else
            "the weakest arm's largest significant effect ("
            + ", ".join(n for n, r in methods.items() if r is not None and r == goal) + ")")
    matched: dict[str, float | None] = {
        name: None if goal is None else matched_strength(
            [0.0, *steps[name]], [0.0, *(direction * e.value for e in effects[name])], goal)
        for name in arms}
    matched_points = [(arms[n], s) for n, s in matched.items() if s is not None and s > 0]
    if matched_points:
        scored = propensity(matched_points, "matched")
        values.update(zip([_label(a.name, s) for a, s in matched_points], scored[1:],
                          strict=True))

    # 3. every reported point: the positive ladder and the matched strengths
    report = [(arms[n], s, False) for n in arms for s in steps[n]]
    report += [(arm, s, True) for arm, s in matched_points]
    points = [(arm, s) for arm, s, _ in report]
    unsteered: dict[str, Any] = {"propensity": bootstrap(base, **boot)}

    tax: list[DocumentAccuracy] | None = None
    if documents is not None:
        logger.info("cost: %d points on %d documents", len(points), len(documents))
        tax = score_points(model, points, lambda plans: accuracy_sweep(
            model, documents, plans, progress=progress))
        unsteered["perplexity"] = tax[0].perplexity(**boot)
        unsteered["top1"] = tax[0].estimate("top1", **boot)

    scores: list[list[float]] | None = None
    texts: dict[str, tuple[str, ...]] = {}
    if generate_prompts and text_score is not None:
        logger.info("text: %d points x %d prompts", len(points), len(generate_prompts))
        sequences = encode_many(model, list(generate_prompts))
        made = score_points(model, points, lambda plans: [
            _continuations(model, sequences, plan, generate_tokens) for plan in plans])
        scores = [text_score(t) for t in made]
        texts = {"unsteered": made[0], **{_label(arm.name, s) + ("*" if m else ""): t
                                          for (arm, s, m), t in zip(report, made[1:],
                                                                    strict=True)}}
        unsteered["text_score"] = sum(scores[0]) / len(scores[0])

    # One arm of each kind is timed: a hook costs the same whatever vector and coefficient
    # it adds, and an edit costs nothing at inference, so the kind sets the speed.
    speed: dict[str, float] = {}
    timed: dict[str, str] = {}
    if generate_prompts and throughput_repeats > 0:
        for name, arm in arms.items():
            timed.setdefault(arm.kind, name)
        strengths = {name: matched.get(name) or steps[name][-1] for name in timed.values()}
        logger.info("throughput: %d configurations x %d rounds", len(timed) + 1,
                    throughput_repeats)
        rounds = generation_throughput(model, [(arms[n], s) for n, s in strengths.items()],
                                       generate_prompts, max_new_tokens=generate_tokens,
                                       repeats=throughput_repeats)
        rates = [statistics.median(r) for r in rounds]
        unsteered["tokens_per_s"] = rates[0]
        speed = dict(zip(timed, rates[1:], strict=True))
        unsteered["timed_arms"] = dict(timed)
        # per round, each kind's rate over the plain model's in the same round
        unsteered["tokens_per_s_rounds"] = {
            "plain": rounds[0], **dict(zip(timed, rounds[1:], strict=True))}
        unsteered["speed_ratio"] = {kind: statistics.median(
            [a / b for a, b in zip(r, rounds[0], strict=True)])
            for kind, r in zip(timed, rounds[1:], strict=True)}

    rows = []
    for index, (arm, strength, is_matched) in enumerate(report):
        effect = paired_effect(values[_label(arm.name, strength)], base, metric=words.name,
                               direction=direction, **boot)
        row = Row(arm.name, arm.kind, arm.unit, strength, is_matched, effect,
                  tokens_per_s=speed.get(arm.kind))
        if scores is not None:
            row = replace(row, text=paired_effect(scores[index + 1], scores[0],
                                                  metric=text_metric, direction=direction,
                                                  **boot))
        if tax is not None:
            counts, plain = tax[index + 1], tax[0]
            assert counts.nll is not None and plain.nll is not None
            row = replace(row, perplexity=counts.perplexity(**boot),
                          perplexity_ratio=_paired_docs(counts.nll, plain.nll, plain.tokens,
                                                        _perplexity_ratio, **boot),
                          top1_delta=_paired_docs(counts.top1, plain.top1, plain.tokens,
                                                  _top1_delta, **boot))
        rows.append(row)

    audit: dict[str, Effect] = {}
    if audit_items:
        logger.info("sign audit on %d items", len(audit_items))
        largest = [(arms[name], steps[name][-1]) for name in arms]
        scored = score_points(model, largest, lambda plans: list(continuation_propensities(
            model, audit_items, plans, batch_size=batch_size).summed))
        audit = {arm.name: paired_effect(value, scored[0], metric="completions",
                                         direction=direction, **boot)
                 for (arm, _), value in zip(largest, scored[1:], strict=True)}
        for name, effect in audit.items():
            if effect.verdict == "reversed":
                logger.warning("sign audit: %s moves its own completions against the intended "
                               "direction (%s)", name, format(effect, ".2f"))

    return Comparison(words.name, direction, len(prompts), tuple(rows), slopes, steps, goal,
                      rule, reach, matched, unsteered, audit, texts, text_metric,
                      counted_words(model, words))
