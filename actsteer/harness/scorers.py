"""The harness's three local scorers, each one raw value per generation.

* **concept** — the behaviour's words per 100 generated tokens (:func:`concept_rate`: the
  behaviour side of its :class:`~actsteer.contrast.WordSets`, the words the model's
  tokenizer counts, matched as whole words, any case); for sentiment also VADER's compound
  score of the text (:func:`vader_compound`; VADER, Hutto & Gilbert 2014, ships its own
  lexicon);
* **relevance** — pointwise mutual information of the generation with the instruction under
  the plain model, per token: ``mean log p(gen | scaffold(instruction)) - mean log p(gen |
  scaffold(neutral))`` (:func:`plain_scores`);
* **fluency** — the mean per-token log-likelihood of the generation under the plain model
  after the neutral scaffold (:func:`plain_scores`), so that ``log p(gen | instruction) =
  fluency + relevance`` splits into what the text is and what it owes to the instruction.

The scaffold is the chat template's user turn (:func:`scaffold`); the neutral one holds
:data:`NEUTRAL_INSTRUCTION`. Generated tokens are scored as generated (token ids, never
re-tokenised text), the end-of-sequence token included when the model produced one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.batching import encode, length_batches, pad
from actsteer.errors import InvalidValueError
from actsteer.plan import empty_plan
from actsteer.prompts import chat_prompt
from actsteer.sweep import sweep_logits

__all__ = ["NEUTRAL_INSTRUCTION", "concept_rate", "distinct_share", "mean_logprobs",
           "plain_scores", "scaffold", "vader_compound"]

NEUTRAL_INSTRUCTION = "Say something."
"""The user turn of the neutral scaffold: asks for text without asking for any content."""


def scaffold(tokenizer: Any, instruction: str, extra: str | None = None) -> str:
    """The chat prompt of one user turn: the instruction, then ``extra`` (a behaviour's
    instruction, for prompting) after a space."""
    message = instruction if not extra else f"{instruction} {extra}"
    return chat_prompt(tokenizer, message)


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def concept_rate(text: str, words: Sequence[str], n_tokens: int) -> float:
    """Occurrences of ``words`` in ``text`` (whole words, any case) per 100 of its
    ``n_tokens`` tokens.

    Example:
        >>> concept_rate("Good food, good people.", ["good"], 8)   # 2 words in 8 tokens
        25.0
    """
    if n_tokens < 1:
        raise InvalidValueError(f"n_tokens must be >= 1, got {n_tokens}")
    wanted = {w.lower() for w in words}
    found = sum(1 for word in _WORD.findall(text) if word.lower() in wanted)
    return 100.0 * found / n_tokens


def vader_compound(texts: Sequence[str]) -> list[float] | None:
    """VADER's compound sentiment score (-1 to 1) of each text, or None where
    ``vaderSentiment`` is not installed."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    analyzer = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


def distinct_share(tokens: Sequence[int]) -> float:
    """The share of distinct tokens among ``tokens`` (low: degenerate repetition)."""
    return len(set(tokens)) / max(1, len(tokens))


def mean_logprobs(model: Any, contexts: Sequence[Sequence[int]],
                  continuations: Sequence[Sequence[int]], *, batch_size: int = 16
                  ) -> Float[Tensor, " n"]:
    """Mean log-probability per token of each continuation after its context (token ids),
    under the model as it is (no plan): one forward pass per batch of right-padded rows.

    Raises:
        InvalidValueError: unequal lists, an empty context or an empty continuation.
    """
    if len(contexts) != len(continuations):
        raise InvalidValueError(f"{len(contexts)} contexts for {len(continuations)} "
                                "continuations; give one context per continuation")
    for index, (context, continuation) in enumerate(zip(contexts, continuations, strict=True)):
        if not context or not continuation:
            raise InvalidValueError(f"row {index} has an empty context or continuation; both "
                                    "need at least one token")
    sequences = [list(c) + list(g) for c, g in zip(contexts, continuations, strict=True)]
    starts = [len(c) for c in contexts]
    out = torch.zeros(len(sequences), dtype=torch.float64)
    plain = [empty_plan()]
    for group in length_batches([len(s) for s in sequences], batch_size):
        batch = pad(model, [sequences[i] for i in group], padding_side="right")
        scored = torch.zeros(batch.tokens.shape, dtype=torch.bool)
        for row, i in enumerate(group):  # position p predicts token p + 1
            scored[row, starts[i] - 1: len(sequences[i]) - 1] = True

        def reduce(logits: Tensor, tokens: Tensor = batch.tokens,
                   scored: Tensor = scored) -> Tensor:
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            picked = logp.gather(-1, tokens[:, 1:].to(logp.device)[..., None]).squeeze(-1)
            mask = scored[:, :-1].to(picked.device)
            return (picked * mask).sum(-1) / mask.sum(-1)

        values = sweep_logits(model, batch, plain, positions="all", reduce=reduce)
        out[torch.as_tensor(group)] = values[0].double().cpu()
    return out


def plain_scores(model: Any, instructions: Sequence[str],
                 generations: Sequence[Sequence[int]], *, batch_size: int = 16
                 ) -> dict[str, list[float]]:
    """``{"relevance": [...], "fluency": [...]}``: per generation (token ids, generated after
    ``instructions[i]``), its per-token PMI with the instruction and its per-token
    log-likelihood after the neutral scaffold, both under the plain model (module
    docstring)."""
    tokenizer = model.tokenizer
    with_instruction = [encode(model, scaffold(tokenizer, text)) for text in instructions]
    neutral = encode(model, scaffold(tokenizer, NEUTRAL_INSTRUCTION))
    given = mean_logprobs(model, with_instruction, generations, batch_size=batch_size)
    alone = mean_logprobs(model, [neutral] * len(generations), generations,
                          batch_size=batch_size)
    return {"relevance": [round(float(x), 5) for x in given - alone],
            "fluency": [round(float(x), 5) for x in alone]}
