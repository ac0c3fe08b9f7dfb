"""Plans as units of work (actsteer.units): every measurement taking ``executor=`` gives,
split into units over a pool of workers, what one pass gives; results scatter back to plan
order; a bad plan is refused before any unit runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from actsteer.accuracy import Documents, accuracy_sweep, next_token_accuracy
from actsteer.contrast import ContrastItem, WordSets
from actsteer.evaluation import ABScores
from actsteer.executor import LocalExecutor
from actsteer.likelihood import continuation_propensities, word_propensities
from actsteer.plan import Injection, SteeringPlan, empty_plan, single
from actsteer.units import gather, plan_jobs, run_plans


class Pool(LocalExecutor):
    """A local executor that says it has three workers, so plans split into units."""

    workers = 3

    def __init__(self, model) -> None:
        super().__init__(model)
        self.keys: list[str] = []

    def map(self, units):
        self.keys += [u.key for u in units]
        return super().map(units)


@pytest.fixture(scope="module")
def plans(vectors):
    vector, _ = vectors
    return [single(vector, 3, 4.0), empty_plan(), single(vector, 1, -4.0),
            single(vector, 2, 2.0), single(vector, 1, 4.0)]


def test_word_and_continuation_propensities_through_units_equal_one_pass(tiny_model,
                                                                         plans) -> None:
    sets = [WordSets("mood", ("good", "happy"), ("bad", "sad"))]
    prompts = ["The day was", "I feel", "Tell me about the weather"]
    pool = Pool(tiny_model)
    whole = word_propensities(tiny_model, prompts, sets, plans)
    parts = word_propensities(tiny_model, prompts, sets, plans, executor=pool)
    assert len(pool.keys) == 3  # the plans really were split
    torch.testing.assert_close(parts["mood"].summed, whole["mood"].summed, atol=1e-5, rtol=0)
    items = [ContrastItem("I went to the cafe.", (" It was lovely.",), (" It was awful.",)),
             ContrastItem("The film ended", (" well",), (" badly", " in tears"))]
    whole_c = continuation_propensities(tiny_model, items, plans)
    parts_c = continuation_propensities(tiny_model, items, plans, executor=Pool(tiny_model))
    torch.testing.assert_close(parts_c.summed, whole_c.summed, atol=1e-5, rtol=0)
    torch.testing.assert_close(parts_c.per_token, whole_c.per_token, atol=1e-5, rtol=0)


def test_next_token_accuracy_through_units_equals_one_pass(tiny_model, plans,
                                                           greedy_sequences) -> None:
    documents = Documents.build(tiny_model, greedy_sequences, batch_size=2)
    whole = accuracy_sweep(tiny_model, documents, plans)
    parts = accuracy_sweep(tiny_model, documents, plans, executor=Pool(tiny_model))
    assert int(whole[1].top1.sum()) > 0  # the unsteered model hits its own continuation
    for one, other in zip(whole, parts, strict=True):
        assert torch.equal(one.top1, other.top1) and torch.equal(one.topk, other.topk)
        torch.testing.assert_close(one.nll, other.nll, atol=1e-4, rtol=0)
    single_plan = next_token_accuracy(tiny_model, greedy_sequences, plans[0], batch_size=2,
                                      executor=Pool(tiny_model))
    assert torch.equal(single_plan.top1, whole[0].top1)


def test_gather_puts_every_kind_of_result_back_in_plan_order() -> None:
    rows = [[2, 0], [1, 3]]
    tensor = [torch.tensor([[20], [0]]), torch.tensor([[10], [30]])]
    assert torch.equal(gather(list(zip(rows, tensor, strict=True))),
                       torch.tensor([[0], [10], [20], [30]]))
    assert gather([([2, 0], ["c", "a"]), ([1, 3], ["b", "d"])]) == ["a", "b", "c", "d"]
    mapped = gather([([1], {"x": torch.tensor([1.0])}), ([0], {"x": torch.tensor([0.0])})])
    assert torch.equal(mapped["x"], torch.tensor([0.0, 1.0]))
    scores = [ABScores(*(torch.full((1, 2), float(i)) for _ in range(4))) for i in (1, 0)]
    merged = gather([([1], scores[0]), ([0], scores[1])])
    assert torch.equal(merged.logit_diff, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_gather_refuses_missing_rows_and_values_not_per_plan() -> None:
    with pytest.raises(ValueError, match=r"cover plans 0\.\.1 once"):
        gather([([0], [1]), ([0], [2])])

    @dataclass(frozen=True)
    class Loose:
        values: Tensor
        k: int

    with pytest.raises(TypeError, match=r"Loose.*\['k'\]"):
        gather([([0], Loose(torch.zeros(1), 1)), ([1], Loose(torch.zeros(1), 1))])
    with pytest.raises(TypeError, match="cannot gather a str"):
        gather([([0], "text")])


def test_plan_jobs_refuses_a_bad_plan_before_any_unit_runs(tiny_model) -> None:
    narrow = SteeringPlan((Injection(torch.ones(3), 1),))  # not the model's width
    with pytest.raises(ValueError, match="3"):
        plan_jobs(tiny_model, [empty_plan(), narrow], "echo", {}, lambda rows, r: None)
    with pytest.raises(ValueError, match="at least one plan"):
        run_plans(tiny_model, [], "echo", {})
