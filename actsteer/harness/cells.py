"""One cell of the harness: generate under one intervention for a list of instructions,
then score every generation with the plain model. A registered executor task
(``"harness-cell"``), so that a cell runs in this process or on a Ray worker alike.

A cell's result (stored as is in the results log) holds, per instruction: the text, its
token count, the share of distinct tokens, the raw concept score (words per 100 tokens),
VADER's compound score when asked for, the relevance and the fluency
(:mod:`actsteer.harness.scorers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actsteer.batching import encode_many
from actsteer.executor import register_task
from actsteer.generation import generate_tokens
from actsteer.harness.methods import Intervention
from actsteer.harness.scorers import (
    concept_rate,
    distinct_share,
    plain_scores,
    scaffold,
    vader_compound,
)

__all__ = ["score_cell"]


def score_cell(model: Any, instructions: Sequence[str], intervention: Intervention,
               words: Sequence[str], *, max_new_tokens: int = 24, vader: bool = False,
               batch_size: int = 16) -> dict[str, Any]:
    """Greedy generations for ``instructions`` under ``intervention`` (a batched,
    KV-cached :func:`~actsteer.generation.generate_tokens`), scored with the plain model.

    ``words``: the behaviour's counted words (:func:`actsteer.likelihood.counted_words`).
    """
    tokenizer = model.tokenizer
    prompts = [scaffold(tokenizer, text, intervention.instruction) for text in instructions]
    with intervention.applied(model):
        generated = generate_tokens(model, encode_many(model, prompts), intervention.plan,
                                    max_new_tokens=max_new_tokens, batch_size=batch_size)
    # a row that ends at once keeps its end-of-sequence token, so none is empty
    texts = [str(tokenizer.decode(ids, skip_special_tokens=True)) for ids in generated]
    scored = plain_scores(model, instructions, generated, batch_size=batch_size)
    return {"texts": texts, "tokens": [len(ids) for ids in generated],
            "distinct": [round(distinct_share(ids), 4) for ids in generated],
            "concept": [round(concept_rate(text, words, len(ids)), 4)
                        for text, ids in zip(texts, generated, strict=True)],
            "vader": vader_compound(texts) if vader else None,
            **scored}


@register_task("harness-cell")
def _cell_task(model: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`score_cell` of the payload's ``instructions`` under its ``intervention``."""
    return score_cell(model, payload["instructions"], payload["intervention"], payload["words"],
                      max_new_tokens=int(payload["max_new_tokens"]),
                      vader=bool(payload.get("vader", False)),
                      batch_size=int(payload.get("batch_size", 16)))
