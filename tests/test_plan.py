"""Plans as data: to_dict/from_dict, files, identity; and plan-building defects."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from actsteer import Positions, combined, run, simultaneous, single
from actsteer.batching import encode, pad
from actsteer.plan import SteeringPlan, vector_digest
from actsteer.vector import VectorFileError


def _plan(vectors) -> SteeringPlan:
    first, second = vectors
    return (simultaneous({"a": (first, 1, 2.5), "b": (second, 3, -1.25)}, scale=0.5)
            + single(first, 2, 3.0, positions=Positions("from", 2))
            + single(second.at(0), 0, 1.0 / 3, site="attn_out", positions=Positions("prompt")))


def test_to_dict_from_dict_round_trip_is_exact(vectors) -> None:
    plan = _plan(vectors)
    data = json.loads(json.dumps(plan.to_dict()))  # survives JSON
    tensors = {vector_digest(i.vector): i.vector for i in plan.injections}
    again = SteeringPlan.from_dict(data, tensors)
    assert again.identity() == plan.identity()
    for mine, theirs in zip(plan.injections, again.injections, strict=True):
        assert (mine.layer, mine.site, mine.coefficient, mine.positions, mine.label) == (
            theirs.layer, theirs.site, theirs.coefficient, theirs.positions, theirs.label)
        assert torch.equal(mine.vector, theirs.vector)


def test_saved_plan_reloads_to_bit_identical_logits(tiny_any, vectors, tmp_path) -> None:
    plan = _plan(vectors)
    path = plan.save(tmp_path / "plan.json")
    assert path.is_file() and (tmp_path / "plan.safetensors").is_file()
    again = SteeringPlan.load(path)
    batch = pad(tiny_any, [encode(tiny_any, t) for t in ("hello there", "a longer prompt here")])
    assert torch.equal(run(tiny_any, batch, plan), run(tiny_any, batch, again))


def test_identity_changes_with_values_start_and_coefficient(vectors) -> None:
    first, _ = vectors
    base = single(first, 2, 3.0, positions=Positions("from", 2))
    nudged = first.directions.clone()
    nudged[2, 0] = torch.nextafter(nudged[2, 0], torch.tensor(float("inf")))
    changed = [
        single(dataclasses.replace(first, directions=nudged), 2, 3.0,
               positions=Positions("from", 2)),                      # one ulp of one entry
        single(first, 2, 3.0, positions=Positions("from", 3)),        # position start
        single(first, 2, 3.0000001, positions=Positions("from", 2)),  # coefficient
        single(first.at(2), 2, 3.0, positions=Positions("from", 2), site="resid_pre"),
        single(first, 1, 3.0, positions=Positions("from", 2)),
    ]
    identities = {plan.identity() for plan in changed}
    assert len(identities) == len(changed) and base.identity() not in identities
    renamed = dataclasses.replace(base, name="something else", meta={"note": "x"})
    assert renamed.identity() == base.identity()  # display fields are not identity


def test_damaged_or_mismatched_plan_files_raise_clearly(vectors, tmp_path) -> None:
    plan = _plan(vectors)
    path = plan.save(tmp_path / "plan.json")
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(VectorFileError, match=r"plan\.json"):
        SteeringPlan.load(path)
    data = plan.to_dict()
    data["injections"][0]["vector"] = "0" * 16
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(VectorFileError, match="no tensor for vector digest"):
        SteeringPlan.load(path)
    (tmp_path / "plan.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"plan\.safetensors"):
        SteeringPlan.load(path)


def test_combined_keeps_vectors_that_share_a_dataset_name(vectors) -> None:
    first, _ = vectors
    twin = dataclasses.replace(first, directions=-2 * first.directions)  # same meta.dataset
    assert twin.meta.dataset == first.meta.dataset
    (injection,) = combined([first, twin], 1, weights=[1.0, 1.0]).injections
    torch.testing.assert_close(injection.vector, first.at(1) - 2 * first.at(1))
    assert "first#2" in injection.label


def test_single_warns_when_a_vector_is_added_at_another_site(vectors) -> None:
    first, _ = vectors
    with pytest.warns(UserWarning, match="read at 'resid_post' but is added at 'attn_out'"):
        single(first, 1, 2.0, site="attn_out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single(first, 1, 2.0, site="resid_post")  # where it was read: no warning
        single(first.at(1), 1, 2.0, site="attn_out")  # a raw tensor: the caller decided
