"""Prompting as an intervention beside steering, measured exactly like it.

Each test opening is put in a chat scaffold: one user turn, then the opening as the start
of the assistant's answer (:func:`actsteer.prompts.chat_prompt` with ``assistant_prefix``),
and the propensity is read at the next token, as on the raw openings. The user turn holds
:data:`REQUEST`, and for prompting :data:`REQUEST` followed by the behaviour's
instruction, so the two scaffolds differ by the instruction's tokens only and every row is
paired on the same openings against the same scaffold without an instruction:

* ``steering:b`` — ``b``'s individual plan (its vector alone at its own layer and
  strength), scaffold without instruction;
* ``prompting:b`` — the unsteered model, scaffold with ``b``'s instruction;
* ``prompting+steering:b`` — both at once.

Every cell holds every behaviour's propensity (one forward pass gives all), so cross-talk
comes with each row. The fluency cost of each row is the perplexity of the text's documents
with the row's intervention applied, each document put after the row's scaffold
(:func:`document_scaffold`: the user turn and the start of the reply), only the
document's tokens scored (:attr:`actsteer.accuracy.Documents.context`). A behaviour with no
instruction gets its steering row and no prompting rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actsteer.batching import encode, encode_many
from actsteer.executor import dispatch
from actsteer.paper.common import digest
from actsteer.paper.multi_behaviour.expressed.keys import (
    NO_INSTRUCTION,
    ROWS,
    ScaffoldKey,
    ScaffoldTaxKey,
    row_cell,
)
from actsteer.paper.multi_behaviour.expressed.plans import UNSTEERED
from actsteer.paper.multi_behaviour.expressed.state import ExpressedRun
from actsteer.plan import SteeringPlan
from actsteer.prompts import chat_prompt

__all__ = [
    "REQUEST",
    "ROWS",
    "document_scaffold",
    "opening_scaffold",
    "row_cell",
    "scaffold_plans",
    "score_fluency",
    "score_prompting",
    "user_turn",
]

REQUEST = "Continue the text."
"""The user turn of every scaffold; prompting appends the behaviour's instruction to it
(``"Continue the text. Write in a cheerful, positive tone."``)."""

def user_turn(instruction: str | None) -> str:
    """The user's message: :data:`REQUEST`, then the instruction when there is one."""
    return REQUEST if instruction is None else f"{REQUEST} {instruction.strip()}"


def opening_scaffold(tokenizer: Any, opening: str, instruction: str | None = None) -> str:
    """``opening`` as the start of the answer to :func:`user_turn` (the propensity is read
    at the token after it)."""
    return chat_prompt(tokenizer, user_turn(instruction), assistant_prefix=opening)


def document_scaffold(tokenizer: Any, instruction: str | None = None) -> str:
    """What goes before a document for the fluency cost: :func:`user_turn` and the start
    of the reply, the document being the reply."""
    return chat_prompt(tokenizer, user_turn(instruction))


def scaffold_plans(run: ExpressedRun, plans: Mapping[str, SteeringPlan]
                   ) -> dict[str, dict[str, SteeringPlan]]:
    """Per scaffold (:data:`NO_INSTRUCTION` or a behaviour with an instruction): the plans
    scored in it, by name."""
    out = {NO_INSTRUCTION: {UNSTEERED: plans[UNSTEERED]}}
    for name, behaviour in run.behaviours.items():
        out[NO_INSTRUCTION][f"individual:{name}"] = plans[f"individual:{name}"]
        if behaviour.instruction:
            out[name] = {UNSTEERED: plans[UNSTEERED],
                         f"individual:{name}": plans[f"individual:{name}"]}
    return out


def _instruction(run: ExpressedRun, scaffold: str) -> str | None:
    return None if scaffold == NO_INSTRUCTION else run.behaviours[scaffold].instruction


def score_prompting(run: ExpressedRun, plans: Mapping[str, SteeringPlan]) -> None:
    """Every row's cells on the test openings in their scaffolds, each stored when its unit
    returns with the digest of its scaffolded prompts (a changed instruction is scored
    again, a finished cell is not)."""
    tokenizer = run.model.tokenizer
    # a unit's key names its scaffold before any "/": one plan is scored in several
    # scaffolds, so the stage and plan alone do not say which result a unit holds
    jobs = []
    for scaffold, wanted in scaffold_plans(run, plans).items():
        instruction = _instruction(run, scaffold)
        prompts = [opening_scaffold(tokenizer, opening, instruction)
                   for opening in run.prompts["test"]]
        tag = {"scaffold": digest(prompts)}
        keys = {name: ScaffoldKey(scaffold, name) for name in wanted}
        jobs += run.score_jobs(prompts, run.stale(keys, wanted, tag), keys,
                               f"scaffold:{scaffold}", tag)
    dispatch(run.executor, jobs, progress=run.progress, desc=f"prompting ({len(jobs)} units)")


def score_fluency(run: ExpressedRun, plans: Mapping[str, SteeringPlan]) -> None:
    """Every row's perplexity on the text's documents (the first ``tax_max_tokens`` tokens
    of each, no BOS), each put after its row's :func:`document_scaffold`, whose tokens are
    read and not scored."""
    documents = [ids[:run.config.tax_max_tokens]
                 for ids in encode_many(run.model, run.tax_texts, bos=False)]
    documents = [d for d in documents if d]
    jobs = []
    for scaffold, wanted in scaffold_plans(run, plans).items():
        text = document_scaffold(run.model.tokenizer, _instruction(run, scaffold))
        prefix = encode(run.model, text)
        tag = {"scaffold": digest([text])}
        keys = {name: ScaffoldTaxKey(scaffold, name) for name in wanted}
        jobs += run.tax_jobs([prefix + d for d in documents], run.stale(keys, wanted, tag),
                             keys, f"fluency:{scaffold}", context=[len(prefix)] * len(documents),
                             tag=tag)
    dispatch(run.executor, jobs, progress=run.progress, desc=f"fluency ({len(jobs)} units)")
