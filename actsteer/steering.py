"""Apply a :class:`~actsteer.plan.SteeringPlan` to a model, and only while you ask.

Example::

    plan = actsteer.single(vector, layer=15, coefficient=4.0)
    with actsteer.steer(model, plan):
        logits = model(tokens)
    text = actsteer.generate(model, "Tell me about money", plan, max_new_tokens=30)

Hooks go through TransformerLens's own ``model.hooks(...)`` context, which registers inside
``try`` and removes exactly what it added in ``finally``: leaving the block (normally or by
an exception, even one raised half-way through registration) leaves the model as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch, PaddingSide, encode, pad
from actsteer.plan import Injection, Positions, SteeringPlan
from actsteer.sites import check_layers
from actsteer.vector import VectorMismatchError

HookFn = Callable[..., Tensor]


class PositionTracker:
    """Where the current forward pass sits in the sequence, for position-limited steering.

    The first forward pass inside a steering context is the prompt. During KV-cached
    generation each later pass carries one new position; during uncached generation each
    pass re-runs the whole sequence from position 0. Call :meth:`new_prompt` (or use
    :func:`run`/:func:`generate`, which do) before an unrelated forward pass.
    """

    def __init__(self) -> None:
        self.prompt_len: int | None = None
        self.offset = 0
        self.seen = 0
        self.row_starts: Tensor | None = None

    def new_prompt(self, row_starts: Tensor | None = None) -> None:
        self.prompt_len = None
        self.offset = 0
        self.seen = 0
        self.row_starts = row_starts

    def advance(self, seq_len: int) -> None:
        """Called once per forward pass, by the earliest steering hook."""
        if self.prompt_len is None:
            self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
        elif seq_len == 1:  # KV-cached decode step
            self.offset, self.seen = self.seen, self.seen + 1
        else:  # uncached generation re-runs the full sequence
            self.offset, self.seen = 0, seq_len

    def mask(self, positions: Positions, batch: int, seq_len: int,
             device: torch.device) -> Tensor:
        """Boolean ``[batch or 1, seq_len, 1]``: True where the vector is added."""
        columns = self.offset + torch.arange(seq_len, device=device)
        prompt_len = self.prompt_len if self.prompt_len is not None else seq_len
        if positions.mode == "prompt":
            chosen = (columns < prompt_len)[None, :]
        elif positions.mode == "generated":
            chosen = (columns >= prompt_len)[None, :]
        else:  # "from": index counted from each row's first real token
            starts = (self.row_starts.to(device) if self.row_starts is not None
                      and len(self.row_starts) == batch else torch.zeros(1, device=device,
                                                                         dtype=torch.long))
            chosen = (columns[None, :] - starts[:, None]) >= positions.start
        return chosen[..., None]


def _make_hook(delta: Tensor, positions: Positions, tracker: PositionTracker,
               leads: bool) -> HookFn:
    """A hook adding ``delta`` at ``positions``. Returns a new tensor (no in-place edits)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        if leads:
            tracker.advance(activation.shape[1])
        if positions.mode == "all":
            return activation + delta
        where = tracker.mask(positions, activation.shape[0], activation.shape[1],
                             activation.device)
        return torch.where(where, activation + delta, activation)

    return hook


_SITE_ORDER = {"resid_pre": 0, "attn_out": 1, "resid_mid": 2, "mlp_out": 3, "resid_post": 4}


def _firing_order(injection: Injection) -> tuple[int, int]:
    return injection.layer, _SITE_ORDER[injection.site]


def check_plan(model: Any, plan: SteeringPlan) -> None:
    """Raise before any forward pass if ``plan`` cannot be applied to ``model``."""
    d_model = int(model.cfg.d_model)
    for injection in plan.injections:
        check_layers(model, [injection.layer], injection.site)
        if injection.vector.shape[0] != d_model:
            raise VectorMismatchError(
                f"{injection.label or 'vector'} has d_model {injection.vector.shape[0]} but the "
                f"model has {d_model}; extract the vector from this model")
        if not torch.isfinite(injection.vector).all() or not torch.isfinite(
                torch.tensor(injection.coefficient)):
            raise ValueError(f"{injection.label or 'vector'} at {injection.hook} is not finite")


def _hook_device(model: Any, layer: int) -> torch.device:
    """The device of block ``layer`` (layers may be split over GPUs with n_devices > 1)."""
    block = model.blocks[layer]
    try:
        return next(block.parameters()).device
    except StopIteration:
        return torch.device(model.cfg.device or "cpu")


@dataclass
class SteeringHandle:
    """What :func:`steer` yields: the model, the plan, and the position tracker."""

    model: Any
    plan: SteeringPlan
    tracker: PositionTracker

    def new_prompt(self, row_starts: Tensor | None = None) -> None:
        self.tracker.new_prompt(row_starts)


@contextlib.contextmanager
def steer(model: Any, plan: SteeringPlan) -> Iterator[SteeringHandle]:
    """Apply ``plan`` to ``model`` inside the ``with`` block; restore it on exit.

    Checks every hook name, width and value first, so a plan that does not fit raises
    before the model is touched. Nests with other hooks and with ``run_with_cache``.
    """
    check_plan(model, plan)
    tracker = PositionTracker()
    dtype = model.cfg.dtype
    ordered = sorted(plan.injections, key=_firing_order)
    hooks = [
        (injection.hook,
         _make_hook(injection.delta.to(device=_hook_device(model, injection.layer), dtype=dtype),
                    injection.positions, tracker, leads=index == 0))
        for index, injection in enumerate(ordered)
    ]
    with model.hooks(fwd_hooks=hooks):
        yield SteeringHandle(model, plan, tracker)


def run(
    model: Any,
    batch: Batch | Sequence[str] | str,
    plan: SteeringPlan | None = None,
    *,
    padding_side: PaddingSide = "left",
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of a (steered) forward pass with an explicit attention mask."""
    if not isinstance(batch, Batch):
        texts = [batch] if isinstance(batch, str) else list(batch)
        batch = pad(model, [encode(model, t) for t in texts], padding_side=padding_side)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        if plan is not None and plan.injections:
            handle = stack.enter_context(steer(model, plan))
            handle.new_prompt(batch.starts)
        return model(batch.tokens, attention_mask=batch.attention_mask)


def generate(
    model: Any,
    prompt: str | Int[Tensor, "1 pos"],
    plan: SteeringPlan | None = None,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    use_past_kv_cache: bool = True,
    **kwargs: Any,
) -> str:
    """Generate a continuation of one prompt under ``plan`` and return only the new text."""
    tokens = (torch.tensor([encode(model, prompt)], device=model.cfg.device)
              if isinstance(prompt, str) else prompt)
    with contextlib.ExitStack() as stack:
        if plan is not None and plan.injections:
            stack.enter_context(steer(model, plan)).new_prompt()
        out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             use_past_kv_cache=use_past_kv_cache, verbose=False, **kwargs)
    return str(model.tokenizer.decode(out[0, tokens.shape[1]:], skip_special_tokens=True))
