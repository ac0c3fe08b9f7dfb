"""A steering vector trained by gradient on a behaviour's contrastive completions.

Method: **BiPO** by default (bi-directional preference optimisation; Cao et al. 2024,
"Personalized Steering of Large Language Models via Bi-directional Preference
Optimization", arXiv 2406.00045); **RePS** (Wu et al. 2025, arXiv 2505.20809) is the other
objective offered. Both are in :mod:`actsteer.learned_objective`.

Why BiPO, although RePS has the stronger published evidence (AxBench rank-1 steering on
Gemma-2: RePS 0.720, ReFT-r1 0.543, DiffMean 0.239; RePS's paper reports it ahead of
BiPO): RePS does not learn this kind of data in the few steps a 2-core CPU affords at 135M.
Its loss weighs each winner's likelihood by the unsteered model's preference between the
two completions (up to 15 nats on sentiment's pairs), so the near-constant nulling term
dominates; six steps at layer 20 of SmolLM2-135M left a vector at cosine 0.015 to CAA
that moved sentiment the wrong way (``docs/learned.md``). BiPO's margin is taken against
the unsteered model's own log-ratio, so every pair starts at loss log 2 and the gradient is
the contrast between the two completions; the same six steps gave cosine 0.48 to CAA and a
vector that moves sentiment as much as CAA at matched norm. ReFT-r1 trains on the
behaviour side alone (language modelling plus a latent sparsity term), with no contrast.

The vector is added at one layer's ``resid_pre`` or ``resid_post`` at every position but
the first (an attention sink, see :func:`~actsteer.learned_objective.vector_hook`), with
the model frozen: only the vector is optimised (Adam), from a seeded random start (never
from the CAA vector). A seeded share of the pairs is held out, and the loss on them is
recorded.

Example::

    behaviour = actsteer.load_expressed("sentiment")
    vector = learn_vector(model, behaviour, layer=20, config=LearnConfig(steps=12),
                          checkpoint="results/sentiment.ckpt.safetensors", progress=True)
    vector.meta.training["held_out_loss"]   # the held-out curve
    vector.save("sentiment_reps.safetensors")

Interrupted (Ctrl-C, a killed job, an exception from ``on_step``), the same call resumes
from the checkpoint and gives the same vector as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from actsteer.contrast import ContrastivePair
from actsteer.data.expressed import ExpressedBehaviour, load_expressed
from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.learned_checkpoint import CheckpointError, TrainingState, load_state, save_state
from actsteer.learned_objective import (
    encode_pairs,
    pair_losses,
    reference_logprobs,
)
from actsteer.models import model_info
from actsteer.progress import by_items
from actsteer.sites import check_layers
from actsteer.vector import SteeringVector
from actsteer.vector_meta import VectorMeta

__all__ = ["OBJECTIVES", "LearnConfig", "StepReport", "learn_vector", "split_pairs"]

logger = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("bipo", "reps")
"""Training objectives :func:`learn_vector` knows."""

_LEARN_SITES = ("resid_pre", "resid_post")


@dataclass(frozen=True)
class LearnConfig:
    """How :func:`learn_vector` trains (checked on construction; JSON via ``asdict``)."""

    steps: int = 12
    """Optimiser steps, one minibatch of training pairs each."""
    learning_rate: float = 0.5
    """Adam's learning rate: large, so that a few CPU steps reach a vector of useful norm
    (BiPO used 5e-4 over 20 epochs on a 7B model)."""
    batch_size: int = 4
    """Training pairs per step (the last batch of an epoch may be smaller)."""
    factors: tuple[float, ...] = (1.0,)
    """Steering factors; each pair in a step draws one, and the held-out loss averages
    over all of them. The vector is stored at factor 1."""
    held_out: float = 0.25
    """Share of the pairs held out (rounded, at least one each side)."""
    seed: int = 0
    """Seeds the split, the random start, the epoch orders and the factor draws."""
    init_norm: float = 1.0
    """Norm of the random starting vector (a seeded Gaussian direction)."""
    site: Literal["resid_pre", "resid_post"] = "resid_post"
    """Residual-stream hook the vector is added at (the convention of :mod:`actsteer.plan`)."""
    objective: str = "bipo"
    """Training objective, one of :data:`OBJECTIVES` (:mod:`actsteer.learned_objective`)."""
    beta: float = 0.1
    """BiPO's temperature on the log-likelihood-ratio margin (unused by RePS)."""
    eval_every: int = 3
    """Measure the held-out loss every this many steps (and before the first, and after
    the last)."""
    checkpoint_every: int = 3
    """Write the checkpoint every this many steps (and after the last), when one is given."""

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, want: str) -> InvalidValueError:
            return InvalidValueError(f"LearnConfig.{name}={value!r}: {want}")

        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise bad(name, value, "give an integer >= 1")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", self.seed, "give an integer >= 0")
        for name in ("learning_rate", "init_norm", "beta"):
            value = getattr(self, name)
            if not _is_number(value) or not (math.isfinite(value) and value > 0):
                raise bad(name, value, "give a finite number > 0")
        factors = self.factors
        if (isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or not factors
                or not all(_is_number(f) and math.isfinite(f) and f > 0 for f in factors)):
            raise bad("factors", factors, "give a non-empty tuple of finite numbers > 0, "
                                          "e.g. (1.0, 2.0)")
        object.__setattr__(self, "factors", tuple(float(f) for f in factors))
        if not _is_number(self.held_out) or not 0 < self.held_out < 1:
            raise bad("held_out", self.held_out, "give a share strictly between 0 and 1, "
                                                 "e.g. 0.25")
        if self.site not in _LEARN_SITES:
            raise bad("site", self.site, f"a vector is learned at {' or '.join(_LEARN_SITES)}")
        if self.objective not in OBJECTIVES:
            raise bad("objective", self.objective, f"choose from {', '.join(OBJECTIVES)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class StepReport:
    """What ``on_step`` receives after each step (its checkpoint, if due, is written)."""

    step: int
    train_loss: float
    held_out_loss: float | None
    """Measured at this step, else None."""


def split_pairs(n_pairs: int, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held-out)`` pair indices, each sorted: a seeded shuffle, the first
    ``round(held_out * n_pairs)`` (at least 1) held out."""
    n_held = max(1, round(held_out * n_pairs))
    if n_pairs - n_held < 1:
        raise InvalidValueError(f"{n_pairs} pairs leave none to train on with held_out="
                                f"{held_out}; give at least 2 pairs or a smaller share")
    order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_held:]), sorted(order[:n_held])


def _pairs_of(behaviour: ExpressedBehaviour | str | os.PathLike[str] | Sequence[ContrastivePair]
              ) -> tuple[list[ContrastivePair], str]:
    if isinstance(behaviour, (str, os.PathLike)):
        behaviour = load_expressed(behaviour if isinstance(behaviour, str) else Path(behaviour))
    if isinstance(behaviour, ExpressedBehaviour):
        return behaviour.pairs(), behaviour.name
    pairs = list(behaviour)
    if not pairs or not all(isinstance(p, ContrastivePair) for p in pairs):
        raise InvalidTypeError("behaviour must be an expressed behaviour, its name or file, "
                               f"or a non-empty list of ContrastivePair; got {behaviour!r:.80}")
    return pairs, ""


def _run_key(model: Any, pairs: Sequence[ContrastivePair], layer: int,
             config: LearnConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (``steps`` may grow)."""
    settings = {k: v for k, v in asdict(config).items() if k != "steps"}
    text = json.dumps([[p.prompt, p.positive, p.negative] for p in pairs])
    info = model_info(model)
    return {"config": json.loads(json.dumps(settings)), "layer": layer, "model": info.name,
            "d_model": info.d_model, "pairs": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _fresh_state(d_model: int, config: LearnConfig) -> tuple[TrainingState, torch.Generator]:
    rng = torch.Generator().manual_seed(config.seed)
    start = torch.randn(d_model, generator=rng, dtype=torch.float64)
    start = (start * (config.init_norm / start.norm())).float()
    zeros = torch.zeros(d_model)
    return TrainingState(start, zeros, zeros.clone(), rng.get_state()), rng


def _resume(path: Path, key: dict[str, Any], config: LearnConfig
            ) -> tuple[TrainingState, torch.Generator]:
    state, saved = load_state(path)
    if saved != key:
        differ = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
        raise CheckpointError(
            f"checkpoint {path} was written by another run (different {', '.join(differ)}: "
            f"saved {[saved.get(k) for k in differ]}, now {[key.get(k) for k in differ]}); "
            "use the same model, pairs, layer and config, or delete it to start afresh")
    if state.step > config.steps:
        raise CheckpointError(f"checkpoint {path} is at step {state.step}, past steps="
                              f"{config.steps}; give steps >= {state.step}")
    rng = torch.Generator()
    rng.set_state(state.rng_state)
    logger.info("resuming %s from step %d of %d", path, state.step, config.steps)
    return state, rng


def _draw(state: TrainingState, train: list[int], config: LearnConfig,
          rng: torch.Generator) -> tuple[list[int], torch.Tensor]:
    """The next minibatch (a new seeded epoch order when the last one is used up) and one
    factor per pair."""
    if not state.order:
        state.order = [train[i] for i in torch.randperm(len(train), generator=rng).tolist()]
    batch, state.order = state.order[:config.batch_size], state.order[config.batch_size:]
    picks = torch.randint(len(config.factors), (len(batch),), generator=rng)
    factors = torch.tensor(config.factors)[picks]
    if config.objective == "bipo":  # a random direction d per pair
        factors = factors * (torch.randint(2, (len(batch),), generator=rng) * 2 - 1)
    return batch, factors


def learn_vector(
    model: Any,
    behaviour: ExpressedBehaviour | str | os.PathLike[str] | Sequence[ContrastivePair],
    *,
    layer: int,
    config: LearnConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
) -> SteeringVector:
    """Train one steering vector at ``layer`` on ``behaviour``'s completions (module
    docstring); return it as a :class:`SteeringVector` whose ``meta.training`` records
    the objective, steps, learning rate, seed, both loss curves and the split.

    Args:
        behaviour: an expressed behaviour, its name or behaviour file
            (:func:`actsteer.load_expressed`), or contrastive pairs (prompt, the
            behaviour's completion, the contrast's).
        layer: block whose ``config.site`` receives the vector.
        checkpoint: a file to write the training state to every
            ``config.checkpoint_every`` steps (atomically); if it exists, training resumes
            from it (it must come from the same model, pairs, layer and config, ``steps``
            aside) and ends with the vector an uninterrupted run would give.
        progress: show a progress bar over steps.
        on_step: called after every step with a :class:`StepReport`, once that step's
            checkpoint (if due) is written; an exception it raises stops training there
            and propagates (the checkpoint keeps the last saved step).
    """
    config = LearnConfig() if config is None else config
    if not isinstance(config, LearnConfig):
        raise InvalidTypeError(f"config must be a LearnConfig, got {type(config).__name__}")
    hook_point = check_layers(model, [layer], config.site)[0]
    pairs, dataset = _pairs_of(behaviour)
    train, held = split_pairs(len(pairs), config.held_out, config.seed)
    encoded = encode_pairs(model, pairs)
    key = _run_key(model, pairs, layer, config)
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        state, rng = _resume(path, key, config)
    else:
        state, rng = _fresh_state(int(model.cfg.d_model), config)
    device = torch.device(model.cfg.device or "cpu")
    reference = reference_logprobs(model, encoded)
    vector = state.vector.to(device).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([vector], lr=config.learning_rate)
    if state.step:
        optimizer.load_state_dict({
            "state": {0: {"step": torch.tensor(float(state.step)),
                          "exp_avg": state.exp_avg.to(device).clone(),
                          "exp_avg_sq": state.exp_avg_sq.to(device).clone()}},
            "param_groups": optimizer.state_dict()["param_groups"]})

    def held_out_loss() -> float:
        values = torch.tensor(config.factors)
        if config.objective == "bipo":
            values = torch.cat([values, -values])
        grid = values[:, None].expand(-1, len(held))
        with torch.no_grad():
            losses = pair_losses(model, hook_point, vector, [encoded[i] for i in held], grid,
                                 _subset(reference, held), objective=config.objective,
                                 beta=config.beta)
        return float(losses.mean())

    def record(step: int) -> float:
        loss = held_out_loss()
        state.held_out_steps.append(step)
        state.held_out_loss.append(loss)
        return loss

    if state.step == 0 and not state.held_out_steps:
        record(0)
    steps = [[s] for s in range(state.step + 1, config.steps + 1)]
    for (step,) in by_items(steps, desc=f"learning a vector ({config.objective})",
                            progress=progress, unit="step"):
        batch, factors = _draw(state, train, config, rng)
        losses = pair_losses(model, hook_point, vector, [encoded[i] for i in batch],
                             factors[None], _subset(reference, batch),
                             objective=config.objective, beta=config.beta)
        loss = losses.mean()
        (grad,) = torch.autograd.grad(loss, [vector])
        vector.grad = grad
        optimizer.step()
        vector.grad = None
        state.step = step
        state.train_loss.append(float(loss.detach()))
        measured = (record(step) if step % config.eval_every == 0 or step == config.steps
                    else None)
        if path is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            _snapshot(state, vector, optimizer, rng)
            save_state(path, state, key)
        if on_step is not None:
            on_step(StepReport(step, state.train_loss[-1], measured))
    _snapshot(state, vector, optimizer, rng)
    return _as_vector(model, state, layer, config, dataset, train, held)


def _subset(scales: tuple[torch.Tensor, torch.Tensor], rows: list[int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.as_tensor(rows)
    return scales[0][index], scales[1][index]


def _snapshot(state: TrainingState, vector: torch.Tensor, optimizer: torch.optim.Optimizer,
              rng: torch.Generator) -> None:
    """Copy the live vector, Adam's moments and the generator into ``state``."""
    state.vector = vector.detach().cpu().clone()
    moments = optimizer.state.get(vector, {})
    if moments:
        state.exp_avg = moments["exp_avg"].detach().cpu().clone()
        state.exp_avg_sq = moments["exp_avg_sq"].detach().cpu().clone()
    state.rng_state = rng.get_state()


def _as_vector(model: Any, state: TrainingState, layer: int, config: LearnConfig,
               dataset: str, train: list[int], held: list[int]) -> SteeringVector:
    info = model_info(model)
    training = {
        "objective": config.objective, "steps": state.step,
        "learning_rate": config.learning_rate, "batch_size": config.batch_size,
        "factors": list(config.factors), "seed": config.seed,
        "init": f"random, norm {config.init_norm:g}", "positions": "all",
        "train_size": len(train), "held_out_size": len(held), "held_out_pairs": held,
        "train_loss": state.train_loss,
        "held_out_loss": {"steps": state.held_out_steps, "loss": state.held_out_loss},
    }
    meta = VectorMeta(model=info.name, backend=info.backend,
                      weight_processing=info.weight_processing, read_position="trained",
                      method=config.objective, dataset=dataset, n_items=len(train),
                      model_n_layers=info.n_layers, training=training)
    return SteeringVector(state.vector[None].float(), (layer,), config.site, meta)
