"""A/B behaviour items without their letters: the answer *texts* as contrasting continuations.

An A/B item asks for a letter, and on a small model the letter can move while the
behaviour does not. The same item can be measured (and a vector extracted) from the
answers themselves: the question without its lettered choice lines, then the matching
answer's text against the other answer's text as continuations
(:class:`actsteer.contrast.ContrastItem`, scored by
:func:`actsteer.likelihood.continuation_propensities`). Yes/No items continue with
``"Yes"`` or ``"No"``.

Example::

    items, skipped = letter_free_items(dataset.items, "paper")
    scores = continuation_propensities(model, items, [empty_plan(), plan])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from actsteer.contrast import ContrastItem, ContrastivePair
from actsteer.data.behaviours.items import BehaviourItem
from actsteer.errors import InvalidValueError
from actsteer.prompts import PromptFormat, chat_prompt, reply_lead

__all__ = ["answer_texts", "letter_free_items", "letter_free_pairs"]

_CHOICE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def answer_texts(question: str) -> tuple[str, dict[str, str]]:
    """The question without its lettered choice lines (and a ``Choices:`` heading), and
    each letter's answer text.

    Example:
        >>> answer_texts("Cake now or later?\\n\\nChoices:\\n (A) Now\\n (B) Later")
        ('Cake now or later?', {'A': 'Now', 'B': 'Later'})
    """
    texts = {m.group(1): m.group(2) for m in _CHOICE.finditer(question)}
    stem = _CHOICE.sub("", question)
    stem = re.sub(r"\n?[ \t]*Choices:[ \t]*\n?", "\n", stem)
    return re.sub(r"\n{3,}", "\n\n", stem).strip(), texts


def _prompt(stem: str, fmt: PromptFormat, tokenizer: Any | None) -> str:
    if fmt == "paper":
        return f"Human:\n{stem}\n\nAI:\n"
    if fmt == "chat":
        if tokenizer is None:
            raise InvalidValueError("format 'chat' needs the model's tokenizer")
        return chat_prompt(tokenizer, stem)
    raise InvalidValueError(f"unknown prompt format {fmt!r}; use 'paper' or 'chat'")


def _sides(item: BehaviourItem) -> tuple[str, str, str] | None:
    """(stem, matching text, other text), or None when the answers have no text."""
    if item.kind == "YesNo":
        return item.question.strip(), item.matching, item.not_matching
    stem, texts = answer_texts(item.question)
    if item.matching not in texts or item.not_matching not in texts:
        return None
    return stem, texts[item.matching], texts[item.not_matching]


def letter_free_items(items: Iterable[BehaviourItem], fmt: PromptFormat = "paper",
                      tokenizer: Any | None = None) -> tuple[list[ContrastItem], list[int]]:
    """Each item as a prompt (its question, no letters) with the matching answer's text
    against the other's; also the indices of items skipped because an answer has no text
    (a lettered item whose choices are not listed as ``(X) text`` lines)."""
    out: list[ContrastItem] = []
    skipped: list[int] = []
    for index, item in enumerate(items):
        sides = _sides(item)
        if sides is None:
            skipped.append(index)
            continue
        stem, matching, other = sides
        # a chat reply starts as the template writes replies (Llama 2: after "[/INST] ")
        lead = reply_lead(tokenizer, stem) if fmt == "chat" and tokenizer is not None else ""
        out.append(ContrastItem(_prompt(stem, fmt, tokenizer), (lead + matching,),
                                (lead + other,)))
    return out, skipped


def letter_free_pairs(items: Iterable[BehaviourItem], fmt: PromptFormat = "paper",
                      tokenizer: Any | None = None) -> list[ContrastivePair]:
    """Contrastive pairs of answer texts for extraction; read them over the answer tokens
    (``caa_vector(..., read="answer_mean")``). Items without answer texts are left out."""
    found, _ = letter_free_items(items, fmt, tokenizer)
    return [ContrastivePair(i.prompt, i.behaviour[0], i.contrast[0]) for i in found]
