"""Directional ablation of sentiment at every writing site, on the embedded model (issue 26).

The laden openings (``actsteer/data/builtin/laden_prompts.json``) already carry a positive
tone; the neutral openings are the expressed behaviours' held-out prompts. The fast test
checks the data; the slow test checks what ablating the sentiment direction does to each.
"""

from __future__ import annotations

import pytest

from actsteer import caa_vector, load_expressed, project, word_propensities
from actsteer.data.expressed import contexts, neutral_prompts
from actsteer.data.laden import LADEN_BEHAVIOURS, laden_prompts
from actsteer.effects import paired_effect
from actsteer.errors import InvalidValueError
from actsteer.plan import empty_plan

LAYER = 20
"""The expressed study's own layer for sentiment (its layer choice, the largest lower
bound of the steering effect over layers 6-22: ``own_layers`` in
``docs/recorded/demo/multi_behaviour.jsonl``)."""


def test_laden_openings_are_held_out_from_extraction_and_from_the_neutral_ones():
    laden = laden_prompts("sentiment")
    assert len(laden) == len(set(laden)) == 24 and "sentiment" in LADEN_BEHAVIOURS
    sentiment = load_expressed("sentiment")
    used = {text.strip() for triple in sentiment.completions for text in triple}
    used |= set(contexts()) | set(neutral_prompts())
    for opening in laden:
        assert opening.strip() not in used
        assert not any(opening in text or text in opening for text in used), opening
        assert not opening.endswith((".", " ")), opening  # the next word is the reading
    with pytest.raises(InvalidValueError, match="no laden openings for 'myopia'"):
        laden_prompts("myopia")


@pytest.mark.slow
def test_every_site_ablation_takes_sentiment_halfway_back_on_laden_openings(smol):
    """Ablating the sentiment direction (the CAA vector's layer-20 row, normalised) at
    ``resid_pre`` of block 0 and every ``attn_out``/``mlp_out`` moves the word-set
    propensity of the laden openings at least halfway to the neutral openings' level (the
    effect's interval lies beyond half the gap). It also lowers the neutral openings (an
    interval below 0): the ablation is not neutral-safe on this model.

    What was tried (``python -m experiments.ablation_sentiment``, stored in
    ``docs/recorded/ablation/``): the issue's claim that the neutral Δ stays below the
    design's MDE does not hold at any of layers 6-22. At layers 18 and 20 (the house's
    choices for sentiment: the surgery study's and the expressed study's) the laden half
    holds, but the neutral openings, which already lean positive, lose 0.40 [0.22, 0.58]
    and 0.77 [0.54, 0.99] nats over all 72, against MDEs of 0.27 and 0.33. A weaker
    neutral claim, |Δ| within half the gap, holds on all 72 at layer 20 but not on the
    every-third subset this test reads to stay short (−1.16 [−1.64, −0.72] against half a
    gap of 0.83), so it is not asserted. Layers 10 and 15 move both sets the wrong way;
    6 and 22 overshoot.
    """
    behaviour = load_expressed("sentiment")
    laden, neutral = list(laden_prompts("sentiment")), list(behaviour.prompts)[::3]
    vector = caa_vector(smol, behaviour.pairs(), layers=[LAYER], read="answer_mean",
                        dataset="sentiment")
    ablate = project(vector, LAYER, every_site=True, n_layers=int(smol.cfg.n_layers))
    assert len(ablate.injections) == 1 + 2 * int(smol.cfg.n_layers)
    scores = word_propensities(smol, laden + neutral, [behaviour.words], [empty_plan(), ablate],
                               batch_size=48)["sentiment"].summed
    n = len(laden)
    gap = float(scores[0, :n].mean() - scores[0, n:].mean())
    assert gap > 1.0, gap  # the laden openings are more positive, clearly
    on_laden = paired_effect(scores[1, :n], scores[0, :n], direction=-1)
    assert on_laden.high < -gap / 2, (on_laden, gap)
    on_neutral = paired_effect(scores[1, n:], scores[0, n:], direction=-1)
    assert on_neutral.verdict == "moves", on_neutral  # down, on text without sentiment
