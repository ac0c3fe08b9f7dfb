"""Tokenise once, pad explicitly, and group by length.

TransformerLens wraps a model's tokenizer so that calling it always prepends BOS, and
infers attention masks from pad tokens (which for SmolLM2 are the ``<|im_end|>`` token
that also appears in real chat prompts). actsteer therefore tokenises without special
tokens, adds BOS itself when the model's config asks for it, and always passes an explicit
attention mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from actsteer.errors import InvalidValueError

PaddingSide = Literal["left", "right"]


def _with_bos(ids: list[int], bos_id: int | None, bos: bool) -> list[int]:
    # A chat template that already starts with BOS (Llama 2's does) must not get a second.
    if bos and bos_id is not None and (not ids or ids[0] != bos_id):
        return [bos_id, *ids]
    return ids


def encode(model: Any, text: str, *, bos: bool | None = None) -> list[int]:
    """Token ids of ``text``, with one BOS exactly when the model expects it (or ``bos``
    says); text that already starts with the BOS token (a rendered chat template) keeps
    just that one."""
    tokenizer = model.tokenizer
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if bos is None:
        bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    return _with_bos(ids, tokenizer.bos_token_id, bos)


def encode_many(model: Any, texts: Sequence[str], *, bos: bool | None = None) -> list[list[int]]:
    """:func:`encode` for many texts (one tokenizer call)."""
    if bos is None:
        bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    tokenizer = model.tokenizer
    encoded = tokenizer(list(texts), add_special_tokens=False).input_ids
    return [_with_bos(list(ids), tokenizer.bos_token_id, bos) for ids in encoded]


# Put before a continuation to tokenise it as text that follows other text: a newline
# stays its own token in byte-level BPE and in SentencePiece (a byte-fallback token).
_ANCHOR = "\n"


def encode_continuations(model: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as it continues other text (an answer after its prompt, a
    word after a space): no BOS, and no SentencePiece dummy prefix.

    Llama-family tokenizers put a ``"▁"`` in front of every text they encode, as if it
    began a line: alone, ``"A"`` is ``"▁A"`` although after ``"... I choose ("`` the model
    reads the bare ``"A"``, and ``" wonderful"`` may be ``["▁", "▁wonderful"]``. For such
    a tokenizer each text is encoded after a newline and the newline's tokens are cut off;
    other tokenizers encode each text on its own, as :func:`encode_many` does.

    Raises:
        ValueError: the newline's tokens are not a prefix of some text's tokens after it
            (the tokenizer merged them), so the cut would be wrong.
    """
    tokenizer = model.tokenizer
    anchor = list(tokenizer(_ANCHOR, add_special_tokens=False).input_ids)
    probe = list(tokenizer(_ANCHOR + "A", add_special_tokens=False).input_ids)
    alone = list(tokenizer("A", add_special_tokens=False).input_ids)
    if probe[len(anchor):] == alone:  # no dummy prefix
        return encode_many(model, texts, bos=False)
    out = []
    for text, ids in zip(texts, tokenizer([_ANCHOR + t for t in texts],
                                          add_special_tokens=False).input_ids, strict=True):
        ids = list(ids)
        if ids[: len(anchor)] != anchor:
            raise InvalidValueError(
                f"cannot tokenise {text!r} as a continuation: a newline is {anchor} but "
                f"newline + text starts {ids[: len(anchor)]}")
        out.append(ids[len(anchor):])
    return out


def pad_id(model: Any) -> int:
    tokenizer = model.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


@dataclass(frozen=True)
class Batch:
    """Padded token ids with their mask. Row ``i`` holds ``lengths[i]`` real tokens,
    starting at column ``starts[i]`` (0 for right padding)."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    padding_side: PaddingSide

    @property
    def starts(self) -> Int[Tensor, " batch"]:
        if self.padding_side == "right":
            return torch.zeros_like(self.lengths)
        return self.tokens.shape[1] - self.lengths

    @property
    def last(self) -> Int[Tensor, " batch"]:
        """Column of each row's last real token."""
        return self.starts + self.lengths - 1


def pad(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    padding_side: PaddingSide = "left",
    device: torch.device | str | None = None,
) -> Batch:
    """Stack token lists into a padded :class:`Batch` on ``device`` (default: the model's)."""
    if padding_side not in ("left", "right"):
        raise InvalidValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not sequences:
        raise InvalidValueError("cannot pad an empty list of sequences")
    if any(len(seq) == 0 for seq in sequences):
        raise InvalidValueError(
            "cannot pad an empty sequence; every prompt needs at least one token")
    width = max(len(seq) for seq in sequences)
    filler = pad_id(model)
    tokens = torch.full((len(sequences), width), filler, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        tokens[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    target = device if device is not None else model.cfg.device
    lengths = torch.as_tensor([len(s) for s in sequences], dtype=torch.long)
    return Batch(tokens.to(target), mask.to(target), lengths.to(target), padding_side)


def length_batches(
    lengths: Sequence[int], batch_size: int, *, bucket: bool = True
) -> Iterator[list[int]]:
    """Index groups of at most ``batch_size``; with ``bucket``, similar lengths go together
    (less padding). Callers scatter results back by index, so order never leaks out."""
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if bucket else list(
        range(len(lengths))
    )
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
