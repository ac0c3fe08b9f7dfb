"""The library's tasks: what a unit of work computes, as ``task(model, payload) -> result``.

Each is a pure function of the model and plain data, registered by name with
:func:`actsteer.executor.task`, so any worker can run it, and run it again after a fault:

* ``"ab-scores"`` — :func:`actsteer.evaluation.score_items` of ``items``
  (:class:`~actsteer.evaluation.PreparedItems`) under ``plans``: an
  :class:`~actsteer.evaluation.ABScores`;
* ``"word-propensities"`` — :func:`actsteer.likelihood.word_propensities` of token-id
  ``prompts`` under ``plans`` for ``word_sets``: ``{set name: Propensities}``;
* ``"continuation-propensities"`` — :func:`actsteer.likelihood.continuation_propensities`
  of ``items`` under ``plans``: a :class:`~actsteer.likelihood.Propensities`;
* ``"accuracy"`` — :func:`actsteer.accuracy.accuracy_sweep` of token-id ``sequences``
  (padded into batches of ``batch_size`` on the worker) under ``plans``: a list of
  :class:`~actsteer.accuracy.DocumentAccuracy`;
* ``"generate"`` — greedy :func:`actsteer.generation.generate` of ``prompts`` under
  ``plan``: the continuations;
* ``"echo"`` — returns its payload (to measure an executor's overhead per unit).

Optional payload fields: ``batch_size``, ``progress`` (progress bars, for units run in
the driver's process).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actsteer.executor import task


def _options(payload: Mapping[str, Any], desc: str) -> dict[str, Any]:
    """The keyword options every scoring task passes through (batch size, progress bar)."""
    return {"batch_size": payload.get("batch_size", 16),
            "progress": payload.get("progress", False), "desc": payload.get("desc", desc)}


@task("ab-scores")
def ab_scores(model: Any, payload: Mapping[str, Any]) -> Any:
    from actsteer.evaluation import score_items

    return score_items(model, payload["items"], payload["plans"], **_options(payload, "scoring"))


@task("word-propensities")
def word_propensities(model: Any, payload: Mapping[str, Any]) -> Any:
    from actsteer.likelihood import word_propensities as measure

    return measure(model, payload["prompts"], payload["word_sets"], payload["plans"],
                   **_options(payload, "word propensities"))


@task("continuation-propensities")
def continuation_propensities(model: Any, payload: Mapping[str, Any]) -> Any:
    from actsteer.likelihood import continuation_propensities as measure

    return measure(model, payload["items"], payload["plans"],
                   **_options(payload, "continuation propensities"))


@task("accuracy")
def accuracy(model: Any, payload: Mapping[str, Any]) -> Any:
    from actsteer.accuracy import Documents, accuracy_sweep

    documents = Documents.build(model, payload["sequences"],
                                batch_size=payload.get("batch_size", 8))
    return accuracy_sweep(model, documents, payload["plans"], k=payload.get("k", 10),
                          progress=payload.get("progress", False))


@task("generate")
def generate(model: Any, payload: Mapping[str, Any]) -> Any:
    from actsteer.generation import generate as continue_greedily

    return continue_greedily(model, list(payload["prompts"]), payload["plan"],
                             max_new_tokens=payload["max_new_tokens"],
                             stop_at_eos=payload.get("stop_at_eos", True))


@task("echo")
def echo(model: Any, payload: Mapping[str, Any]) -> Any:
    del model
    return payload
