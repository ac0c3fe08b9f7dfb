"""A learned (BiPO) sentiment vector on the embedded model: its held-out loss falls, a
training run interrupted after two steps and resumed gives the uninterrupted vector, and
the vector moves sentiment's word-set propensity at a strength matched in norm with CAA.

Few steps, one layer (20, sentiment's own layer in docs/results.md), short completions:
the point is behaviour, not the best vector (docs/learned.md has a longer run)."""

from __future__ import annotations

import pytest
import torch

import actsteer
from actsteer.learned import LearnConfig, StepReport, learn_vector
from actsteer.learned_checkpoint import load_state

pytestmark = pytest.mark.slow

LAYER = 20
CONFIG = LearnConfig(steps=3, batch_size=4, eval_every=3, checkpoint_every=2)


class Killed(Exception):
    """Raised from on_step, as a job killed after a checkpoint."""


@pytest.fixture(scope="module")
def sentiment():
    return actsteer.load_expressed("sentiment")


@pytest.fixture(scope="module")
def learned(smol, sentiment):
    return learn_vector(smol, sentiment, layer=LAYER, config=CONFIG)


def test_held_out_loss_falls(learned):
    curve = learned.meta.training["held_out_loss"]
    assert curve["steps"] == [0, 3]
    assert learned.meta.training["held_out_size"] == 4
    assert curve["loss"][-1] < curve["loss"][0] - 0.05, curve


def test_killed_and_resumed_equals_uninterrupted(smol, sentiment, learned, tmp_path):
    checkpoint = tmp_path / "sentiment.safetensors"

    def kill(report: StepReport) -> None:
        if report.step == 2:
            raise Killed("stopped after step 2")

    with pytest.raises(Killed):
        learn_vector(smol, sentiment, layer=LAYER, config=CONFIG, checkpoint=checkpoint,
                     on_step=kill)
    assert load_state(checkpoint)[0].step == 2
    resumed = learn_vector(smol, sentiment, layer=LAYER, config=CONFIG, checkpoint=checkpoint)
    torch.testing.assert_close(resumed.directions, learned.directions, rtol=0, atol=1e-6)
    assert resumed.meta.training == learned.meta.training


def test_learned_vector_moves_sentiment_at_caa_norm(smol, sentiment, learned):
    caa = actsteer.caa_vector(smol, sentiment.pairs(), read="answer_mean", layers=[LAYER],
                              dataset="sentiment", diagnostics=False)
    prompts = list(sentiment.prompts)[:24]
    norms = actsteer.residual_norms(smol, prompts, layers=[LAYER])
    # The same fraction of the residual norm for both: matched in norm.
    plans = [actsteer.SteeringPlan(),
             actsteer.single(caa, layer=LAYER, coefficient=0.2, norms=norms),
             actsteer.single(learned, layer=LAYER, coefficient=0.2, norms=norms)]
    assert plans[1].injections[0].delta.norm() == pytest.approx(
        float(plans[2].injections[0].delta.norm()), rel=1e-5)
    scores = actsteer.word_propensities(smol, prompts, [sentiment.words], plans)["sentiment"]
    learned_effect = actsteer.paired_effect(scores.summed[2], scores.summed[0])
    caa_effect = actsteer.paired_effect(scores.summed[1], scores.summed[0])
    assert learned_effect.verdict == "moves", (learned_effect, caa_effect)
    assert caa_effect.verdict == "moves", caa_effect
