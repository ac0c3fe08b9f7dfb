"""Where a forward pass sits in the sequence, for plans that steer only some positions.

The steering context reads each call of the model before it runs (:func:`read_call`: its
attention mask, KV cache length and tokens, on either backend) and a
:class:`PositionTracker` turns that into each row's positions: prompt columns versus
generated ones during KV-cached generation, left padding accounted for. Where positions
cannot be known, a position-limited plan raises :class:`PositionsUnknownError` rather
than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from actsteer.errors import ActsteerError
from actsteer.models.info import backend_of
from actsteer.plan import Positions

__all__ = ["ForwardCall", "PositionTracker", "PositionsUnknownError", "read_call"]


@dataclass(frozen=True)
class ForwardCall:
    """What the steering context reads from one call of the model, before it runs.

    ``cached`` is the number of columns already in the KV cache (0 for a pass that starts
    from scratch); ``attention_mask`` covers the cached columns and the new ones when the
    call makes that knowable; ``tokens`` are the new columns' token ids when given.
    """

    cached: int = 0
    attention_mask: Int[Tensor, "batch all_pos"] | None = None
    tokens: Int[Tensor, "batch pos"] | None = None


def _first_real(mask: Tensor) -> Tensor:
    """Column of each row's first attended token (argmax returns the first maximum)."""
    return mask.ne(0).to(torch.int8).argmax(dim=1)


class PositionsUnknownError(ActsteerError, ValueError):
    """A position-limited plan met a forward pass whose positions cannot be known (where
    each row starts, or which columns are the prompt); the message names the fix."""


_FIX_STARTS = ("pass attention_mask= with the tokens, call handle.new_prompt(row_starts) "
               "before the call, or use actsteer.run / actsteer.generate")
_FIX_SPLIT = ("call handle.new_prompt() before a new prompt (and before each generation "
              "run by TransformerLens's own generate), or use actsteer.generate")
_UNSEEN = ("this pass did not go through model(...) (TransformerLens's own "
           "HookedTransformer.generate calls forward directly), so its attention mask and "
           "KV cache are unseen")


class PositionTracker:
    """Where the current forward pass sits in the sequence, for position-limited steering.

    Every call of the model inside :func:`steer` is classified before it runs, from its
    keyword arguments, and a position-limited injection raises
    :class:`PositionsUnknownError` rather than guess what it cannot know:

    * a call with a non-empty KV cache (``past_kv_cache`` on HookedTransformer,
      ``past_key_values`` on TransformerBridge) continues the current sequence at column
      ``cached``;
    * after :meth:`new_prompt`, a call without a cache whose tokens extend the previous
      call's re-runs the sequence with generated tokens appended (uncached generation);
      without :meth:`new_prompt` such a call could as well be a new prompt (a prompt, then
      the prompt with an answer), so ``prompt``/``generated`` plans refuse it;
    * any other call is a **new prompt**. Each row's first real token is read from its
      ``attention_mask``, or from the mask HookedTransformer infers itself (a tokenizer
      that pads on the left); without either, rows start at column 0 when there is one
      row or no row begins with the pad token, and a ``from`` plan refuses the call
      otherwise. A call resumed with ``start_at_layer`` is read the same way from
      ``tokens=`` and ``attention_mask=``.

    Calls that bypass ``model.__call__`` (TransformerLens's own ``HookedTransformer.generate``
    calls ``forward`` directly) are not seen. The first such pass of a ``steer`` block, or
    after :meth:`new_prompt`, is a prompt; after :meth:`new_prompt` a one-column pass is a
    KV-cached decode step and a pass one column longer than the last re-runs the sequence;
    other passes refuse position-limited plans. So call :meth:`new_prompt` before each
    generation (with ``row_starts`` for several left-padded rows, whose mask is unseen).
    """

    def __init__(self, pad_token_id: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.prompt_len: int | None = None
        self.offset = 0
        self.seen = 0
        self.row_starts: Tensor | None = None
        self.unknown_starts: str | None = None
        """Why each row's first column is not known (``from`` plans raise), or None."""
        self.unknown_split: str | None = None
        """Why the prompt's columns are not known (``prompt``/``generated`` raise), or None."""
        self._forced = False
        self._sequence = False  # new_prompt() started it: later passes may continue it
        self._pending: ForwardCall | None = None
        self._tokens: Tensor | None = None

    def new_prompt(self, row_starts: Int[Tensor, " batch"] | None = None) -> None:
        """Make the next pass a new prompt whose rows start at ``row_starts`` (default:
        read from that pass, see the class docstring), and passes after it that continue
        it (KV-cached steps, uncached re-runs) its generation."""
        self.prompt_len = None
        self.offset = 0
        self.seen = 0
        self.row_starts = row_starts
        self.unknown_starts = self.unknown_split = None
        self._forced = True
        self._tokens = None

    def observe(self, call: ForwardCall) -> None:
        """Called by the model's forward pre-hook; consumed by the next :meth:`advance`."""
        self._pending = call

    def advance(self, batch: int, seq_len: int) -> None:
        """Called once per forward pass, by the earliest steering hook."""
        call, self._pending = self._pending, None
        forced, self._forced = self._forced, False
        if call is None:
            self._advance_unseen(batch, seq_len, forced)
            return
        total = call.cached + seq_len
        mask = call.attention_mask
        if mask is not None and mask.shape[-1] != total:
            mask = None
        if call.cached > 0:
            self.offset, self.seen = call.cached, total
            self._sequence = self._sequence or forced
            if self.prompt_len is None:  # the cache holds a prompt this context never saw
                self.prompt_len = call.cached
                if self.row_starts is None:
                    self._read_starts(batch, mask, None, "the KV cache was filled before this "
                                      "steering context saw the prompt")
            elif self.row_starts is None and mask is not None:
                self.row_starts, self.unknown_starts = _first_real(mask), None
            return
        ambiguous = None
        if not forced and self._extends(call.tokens, seq_len):
            if self._sequence:  # an uncached generation re-running its sequence
                self.offset, self.seen, self._tokens = 0, seq_len, call.tokens
                return
            ambiguous = ("its tokens extend the previous call's and it has no KV cache, so it "
                         "may re-run that sequence with generated tokens or be a new prompt")
        if not (forced and self.row_starts is not None):
            self._read_starts(batch, mask, call.tokens)
        self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
        self._tokens, self._sequence, self.unknown_split = call.tokens, forced, ambiguous

    def _advance_unseen(self, batch: int, seq_len: int, forced: bool) -> None:
        if forced or self.prompt_len is None:  # the first pass of a sequence is its prompt
            if not (forced and self.row_starts is not None):
                self._read_starts(batch, None, None, _UNSEEN)
            self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
            self._tokens, self._sequence, self.unknown_split = None, forced, None
        elif self._sequence and seq_len == 1:  # KV-cached decode step
            self.offset, self.seen = self.seen, self.seen + 1
        elif self._sequence and seq_len == self.seen + 1:  # uncached generation re-runs it
            self.offset, self.seen = 0, seq_len
        else:
            reason = (f"{_UNSEEN}; a pass of {seq_len} columns after {self.seen} is not known "
                      "to continue a generation started with handle.new_prompt()")
            self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
            self.row_starts, self.unknown_starts, self.unknown_split = None, reason, reason
            self._tokens, self._sequence = None, False

    def _read_starts(self, batch: int, mask: Tensor | None, tokens: Tensor | None,
                     unseen: str | None = None) -> None:
        """Each row's first real column for a new prompt, or the reason it is unknown."""
        if mask is not None:
            self.row_starts, self.unknown_starts = _first_real(mask), None
            return
        reason = unseen
        if reason is None and tokens is None:
            reason = "the call passes text or embeddings, not token ids with an attention mask"
        elif reason is None and tokens is not None and batch > 1:
            pad = self.pad_token_id
            padded = (tokens[:, 0] == pad).nonzero() if pad is not None else None
            if padded is None:
                reason = "the model has no pad token to tell padding by and no mask was given"
            elif len(padded):
                reason = (f"row {int(padded[0, 0])} begins with the pad token (id {pad}), which "
                          "may be left padding, and the call has no attention_mask")
        if reason is None or batch == 1:  # one row, or none padded: all start at column 0
            self.row_starts, self.unknown_starts = torch.zeros(batch, dtype=torch.long), None
        else:
            self.row_starts, self.unknown_starts = None, reason

    def _extends(self, tokens: Tensor | None, seq_len: int) -> bool:
        previous = self._tokens
        if previous is None or tokens is None or self.prompt_len is None:
            return False
        width = previous.shape[-1]
        return (tokens.shape[0] == previous.shape[0] and seq_len > width
                and torch.equal(tokens[:, :width].to(previous.device), previous))

    def mask(self, positions: Positions, batch: int, seq_len: int,
             device: torch.device, where: str = "vector") -> Tensor:
        """Boolean ``[batch or 1, seq_len, 1]``: True where the vector is added.

        Raises :class:`PositionsUnknownError` naming ``where`` (the injection) when this
        pass's positions for ``positions`` cannot be known.
        """
        columns = self.offset + torch.arange(seq_len, device=device)
        prompt_len = self.prompt_len if self.prompt_len is not None else seq_len
        if positions.mode in ("prompt", "generated") and self.unknown_split is not None:
            raise PositionsUnknownError(f"{where} with {positions}: cannot tell the prompt's "
                                        f"columns: {self.unknown_split}; {_FIX_SPLIT}")
        if positions.mode == "prompt":
            chosen = (columns < prompt_len)[None, :]
        elif positions.mode == "generated":
            chosen = (columns >= prompt_len)[None, :]
        else:  # "from": index counted from each row's first real token
            starts = self._starts(positions, batch, where).to(device)
            chosen = (columns[None, :] - starts[:, None]) >= positions.start
        return chosen[..., None]

    def _starts(self, positions: Positions, batch: int, where: str) -> Tensor:
        starts = self.row_starts
        if starts is None:
            reason = self.unknown_starts or "no pass has been seen"
            raise PositionsUnknownError(f"{where} with {positions}: cannot tell where each row "
                                        f"starts: {reason}; {_FIX_STARTS}")
        if len(starts) != batch:
            raise PositionsUnknownError(
                f"{where} with {positions}: {len(starts)} row starts for a batch of {batch} "
                "rows; give handle.new_prompt(row_starts) one start per row of the next call")
        return starts


def _cache_length(cache: Any) -> int:
    """Columns held by a TransformerLens or Hugging Face KV cache (0 if none or unknown)."""
    if cache is None:
        return 0
    entries = getattr(cache, "entries", None)
    if entries:  # TransformerLensKeyValueCache
        return int(entries[0].past_keys.shape[1])
    length = getattr(cache, "get_seq_length", None)
    return int(length()) if callable(length) else 0


def _inferred_mask(model: Any, tokens: Tensor, kwargs: dict[str, Any]) -> Tensor | None:
    """The mask HookedTransformer builds itself for a call from the start without one:
    TransformerLens 3.9 masks leading pad tokens when the tokenizer pads on the left."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or kwargs.get("start_at_layer") is not None:
        return None
    side = kwargs.get("padding_side")
    if side not in ("left", "right"):
        side = getattr(tokenizer, "padding_side", None)
    if side != "left" or backend_of(model) != "hooked":
        return None
    from transformer_lens.utilities import get_attention_mask

    prepend = kwargs.get("prepend_bos")
    if not isinstance(prepend, bool):
        prepend = bool(model.cfg.default_prepend_bos)
    return get_attention_mask(tokenizer, tokens, prepend, padding_side="left")


def read_call(args: tuple[Any, ...], kwargs: dict[str, Any],
              model: Any = None) -> ForwardCall:
    """A :class:`ForwardCall` from the arguments of ``model(...)`` on either backend
    (with ``model``, a call without a mask gets the one the model infers, if it does)."""
    first = args[0] if args else kwargs.get("input")
    tokens = kwargs.get("tokens")
    if isinstance(first, Tensor) and not first.is_floating_point():
        tokens = first if first.dim() == 2 else first[None]
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        tokens = None
    cache = kwargs.get("past_kv_cache", kwargs.get("past_key_values"))
    cached = _cache_length(cache)
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        mask = None
    if mask is None and not cached and tokens is not None and model is not None:
        mask = _inferred_mask(model, tokens, kwargs)
    previous = getattr(cache, "previous_attention_mask", None)
    # HookedTransformer takes the new columns' mask and appends it to the cache's.
    if (mask is not None and cached and isinstance(previous, Tensor)
            and previous.shape[-1] == cached and previous.shape[0] == mask.shape[0]):
        mask = torch.cat([previous.to(mask.device), mask], dim=-1)
    return ForwardCall(cached, mask, tokens)
