"""Learned steering vectors (actsteer.learned) on the tiny models: the loss falls on a
planted preference, only the vector moves, a resumed run equals an uninterrupted one, bad
configs are refused, and the provenance survives save/load."""

from __future__ import annotations

import pytest
import torch

from actsteer import SteeringVector
from actsteer.contrast import ContrastivePair
from actsteer.errors import InvalidValueError
from actsteer.learned import LearnConfig, StepReport, learn_vector, split_pairs
from actsteer.learned_checkpoint import CheckpointError, load_state

# A planted preference: every context is followed by the same two one-token completions,
# so one direction (raising " red" over " blue" after any context) serves every pair and
# the held-out pairs share it.
PAIRS = [ContrastivePair(f"Item {i}: the colour of the {noun} is", " red", " blue")
         for i, noun in enumerate(["car", "door", "sky", "ball", "hat", "cup", "box", "pen"])]
FAST = dict(steps=6, batch_size=3, held_out=0.25, eval_every=3, checkpoint_every=2)
LAYER = 2


class Stop(Exception):
    """Raised from on_step to interrupt training, as a killed job would."""


def _hooks(model) -> int:
    points = {id(point): point for point in model.hook_dict.values()}  # bridge has aliases
    return sum(len(point.fwd_hooks) + len(point._forward_hooks) for point in points.values())


def _stop_at(step: int):
    def on_step(report: StepReport) -> None:
        if report.step == step:
            raise Stop(f"interrupted after step {step}")
    return on_step


@pytest.fixture(scope="module")
def learned(tiny_any):
    return learn_vector(tiny_any, PAIRS, layer=LAYER, config=LearnConfig(**FAST))


def test_held_out_loss_falls_on_a_planted_preference(learned):
    held = learned.meta.training["held_out_loss"]
    assert held["steps"] == [0, 3, 6]
    # A small random start: near log 2, the loss of a vector that changes nothing.
    assert held["loss"][0] == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=0.02)
    assert held["loss"][-1] < held["loss"][0] - 0.05, held


def test_reps_loss_falls_on_a_planted_preference(tiny_model):
    config = LearnConfig(**{**FAST, "objective": "reps", "factors": (1.0, 2.0)})
    vector = learn_vector(tiny_model, PAIRS, layer=LAYER, config=config)
    held = vector.meta.training["held_out_loss"]["loss"]
    assert held[-1] < held[0], held


def test_only_the_vector_moves(tiny_any):
    before = {name: p.detach().clone() for name, p in tiny_any.named_parameters()}
    learn_vector(tiny_any, PAIRS, layer=LAYER, config=LearnConfig(**{**FAST, "steps": 2}))
    for name, param in tiny_any.named_parameters():
        assert param.grad is None, name
        assert torch.equal(param.detach(), before[name]), name
    assert _hooks(tiny_any) == 0


def test_no_hook_left_after_an_exception_mid_step(tiny_any):
    def explode(activation, hook):
        raise Stop("failure inside the forward pass")

    with (pytest.raises(Stop, match="inside the forward"),
          tiny_any.hooks(fwd_hooks=[(f"blocks.{LAYER + 1}.hook_resid_post", explode)])):
        learn_vector(tiny_any, PAIRS, layer=LAYER, config=LearnConfig(**FAST))
    assert _hooks(tiny_any) == 0
    with pytest.raises(Stop, match="after step 1"):
        learn_vector(tiny_any, PAIRS, layer=LAYER, config=LearnConfig(**FAST),
                     on_step=_stop_at(1))
    assert _hooks(tiny_any) == 0
    assert all(p.grad is None for p in tiny_any.parameters())


def test_interrupted_and_resumed_equals_uninterrupted(tiny_any, learned, tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    config = LearnConfig(**FAST)
    # Stopped after step 3: the checkpoint holds step 2, so step 3 is done again.
    with pytest.raises(Stop):
        learn_vector(tiny_any, PAIRS, layer=LAYER, config=config, checkpoint=checkpoint,
                     on_step=_stop_at(3))
    state, _ = load_state(checkpoint)
    assert state.step == 2 and len(state.train_loss) == 2
    resumed = learn_vector(tiny_any, PAIRS, layer=LAYER, config=config, checkpoint=checkpoint)
    torch.testing.assert_close(resumed.directions, learned.directions, rtol=0, atol=1e-6)
    assert resumed.meta.training == learned.meta.training
    # A finished checkpoint is at the last step: calling again trains nothing more.
    again = learn_vector(tiny_any, PAIRS, layer=LAYER, config=config, checkpoint=checkpoint)
    assert torch.equal(again.directions, resumed.directions)


def test_a_checkpoint_from_another_run_is_refused(tiny_model, tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    learn_vector(tiny_model, PAIRS, layer=LAYER, config=LearnConfig(**{**FAST, "steps": 2}),
                 checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="different config"):
        learn_vector(tiny_model, PAIRS, layer=LAYER,
                     config=LearnConfig(**{**FAST, "steps": 2, "seed": 1}), checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="different layer"):
        learn_vector(tiny_model, PAIRS, layer=1, config=LearnConfig(**{**FAST, "steps": 2}),
                     checkpoint=checkpoint)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        learn_vector(tiny_model, PAIRS, layer=LAYER, config=LearnConfig(**FAST),
                     checkpoint=tmp_path / "junk.safetensors")


@pytest.mark.parametrize(("field", "value"), [
    ("steps", 0), ("steps", 2.5), ("learning_rate", 0.0), ("learning_rate", float("nan")),
    ("batch_size", -1), ("factors", ()), ("factors", (1.0, -2.0)), ("held_out", 1.0),
    ("held_out", 0), ("seed", -3), ("init_norm", float("inf")), ("site", "attn_out"),
    ("objective", "dpo"), ("beta", -0.1), ("eval_every", 0), ("checkpoint_every", True),
])
def test_bad_configs_are_refused_naming_the_value(field, value):
    with pytest.raises(InvalidValueError) as caught:
        LearnConfig(**{field: value})
    assert f"LearnConfig.{field}={value!r}" in str(caught.value)


def test_bad_requests_are_refused(tiny_model):
    with pytest.raises(InvalidValueError, match="leave none to train on"):
        split_pairs(1, 0.25, 0)
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        learn_vector(tiny_model, PAIRS, layer=9, config=LearnConfig(**FAST))
    with pytest.raises(TypeError, match="LearnConfig"):
        learn_vector(tiny_model, PAIRS, layer=LAYER, config={"steps": 2})  # type: ignore[arg-type]


def test_split_is_seeded_and_disjoint():
    train, held = split_pairs(16, 0.25, 7)
    assert len(held) == 4 and sorted(train + held) == list(range(16))
    assert split_pairs(16, 0.25, 7) == (train, held)
    assert split_pairs(16, 0.25, 8) != (train, held)


def test_provenance_round_trips_through_save_and_load(learned, tmp_path):
    training = learned.meta.training
    assert training["objective"] == "bipo" and training["steps"] == 6
    assert training["learning_rate"] == 0.5 and training["seed"] == 0
    assert (training["train_size"], training["held_out_size"]) == (6, 2)
    assert len(training["train_loss"]) == 6
    assert learned.meta.method == "bipo" and learned.layers == (LAYER,)
    path = learned.save(tmp_path / "learned.safetensors")
    loaded = SteeringVector.load(path)
    assert loaded.equals(learned)
    assert loaded.meta.training == training
