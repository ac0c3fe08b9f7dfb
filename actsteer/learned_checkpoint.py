"""The resumable state of :func:`actsteer.learned.learn_vector`, in one file written
atomically: a ``.safetensors`` file whose tensors are the vector, Adam's two moment
estimates and the random generator's state, and whose JSON header holds the step, the
rest of the epoch's order, the loss curves and the key of the run that wrote it.

Never a pickle: a checkpoint is read back field by field, and a file that is not one (or
belongs to another run) raises an error naming the file, the problem and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from actsteer.atomic import atomic_write
from actsteer.errors import ActsteerError, MissingFileError

__all__ = ["CheckpointError", "TrainingState", "load_state", "save_state"]

FORMAT = "actsteer-learned-checkpoint/1"
_TENSORS = ("vector", "exp_avg", "exp_avg_sq", "rng_state")


class CheckpointError(ActsteerError, ValueError):
    """A checkpoint that cannot be read, or that another run wrote."""


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped (mutable: the training
    loop advances it in place and saves it every few steps)."""

    vector: Float[Tensor, " d_model"]
    """The vector after ``step`` optimiser steps (float32, CPU when saved)."""
    exp_avg: Float[Tensor, " d_model"]
    """Adam's first-moment estimate."""
    exp_avg_sq: Float[Tensor, " d_model"]
    """Adam's second-moment estimate."""
    rng_state: Tensor
    """``torch.Generator.get_state()`` of the run's generator (epoch orders, factors)."""
    step: int = 0
    """Optimiser steps taken."""
    order: list[int] = field(default_factory=list)
    """Training pairs of the current epoch not yet used, in the order they will be."""
    train_loss: list[float] = field(default_factory=list)
    """The minibatch loss of each step taken, in order."""
    held_out_steps: list[int] = field(default_factory=list)
    """Steps at which the held-out loss was measured (0: before training)."""
    held_out_loss: list[float] = field(default_factory=list)
    """The held-out loss at each of ``held_out_steps``."""


def save_state(path: str | os.PathLike[str], state: TrainingState, key: dict[str, Any]) -> Path:
    """Write ``state`` and the run's ``key`` to ``path`` atomically (a crash mid-write
    leaves the previous checkpoint in place)."""
    from safetensors.torch import save_file

    tensors = {name: getattr(state, name).detach().cpu().contiguous() for name in _TENSORS}
    header = {"format": FORMAT, "key": key, "step": state.step, "order": state.order,
              "train_loss": state.train_loss, "held_out_steps": state.held_out_steps,
              "held_out_loss": state.held_out_loss}
    text = json.dumps(header)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp),
                                                    metadata={"actsteer": text}))


def load_state(path: str | os.PathLike[str]) -> tuple[TrainingState, dict[str, Any]]:
    """The state and key saved by :func:`save_state`."""
    from safetensors import SafetensorError, safe_open

    source = Path(path)
    if not source.is_file():
        raise MissingFileError(f"no checkpoint at {source}")
    fix = "delete it to start afresh, or give another checkpoint path"
    try:
        with safe_open(str(source), framework="pt") as handle:
            names = set(handle.keys())
            if names != set(_TENSORS):
                raise CheckpointError(f"checkpoint {source} holds tensors {sorted(names)}, "
                                      f"expected {list(_TENSORS)}; {fix}")
            tensors = {name: handle.get_tensor(name) for name in _TENSORS}
            header_text = (handle.metadata() or {}).get("actsteer", "")
    except (SafetensorError, OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{source} is not a safetensors checkpoint ({error}); "
                              f"{fix}") from None
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not an actsteer learned-vector checkpoint "
                              f"(format {FORMAT}); {fix}")
    try:
        state = TrainingState(
            tensors["vector"], tensors["exp_avg"], tensors["exp_avg_sq"],
            tensors["rng_state"], step=_int(header["step"]),
            order=[_int(i) for i in header["order"]],
            train_loss=[float(x) for x in header["train_loss"]],
            held_out_steps=[_int(s) for s in header["held_out_steps"]],
            held_out_loss=[float(x) for x in header["held_out_loss"]])
        key = dict(header["key"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {source} has a bad header ({error}); "
                              f"{fix}") from None
    return state, key


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
