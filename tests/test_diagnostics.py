"""Vector diagnostics: difference consistency and held-out separation, stored with vectors."""

from __future__ import annotations

import json

import pytest
import torch

from actsteer.aggregators import mean_diff
from actsteer.diagnostics import (
    LayerDiagnostics,
    diagnostics_from_meta,
    diagnostics_to_meta,
    difference_consistency,
    held_out_projections,
    vector_diagnostics,
)
from actsteer.errors import InvalidValueError
from actsteer.extraction import ContrastivePair, caa_vector, contrastive_activations
from actsteer.vector import SteeringVector


def _brute_consistency(diffs: torch.Tensor) -> float:
    n = diffs.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j and diffs[i].norm() > 0 and diffs[j].norm() > 0:
                total += float(torch.nn.functional.cosine_similarity(diffs[i], diffs[j], dim=0))
    return total / (n * (n - 1))


def test_consistency_on_constructed_differences():
    e = torch.eye(3, dtype=torch.float64)
    negative = torch.zeros(3, 1, 3, dtype=torch.float64)
    same = torch.stack([e[0], 2 * e[0], 0.5 * e[0]])[:, None]
    assert float(difference_consistency(same, negative)[0]) == pytest.approx(1.0)
    orthogonal = e[:, None]
    assert float(difference_consistency(orthogonal, negative)[0]) == pytest.approx(0.0)
    opposite = torch.stack([e[0], -e[0]])[:, None]
    assert float(difference_consistency(opposite, negative[:2])[0]) == pytest.approx(-1.0)
    assert torch.isnan(difference_consistency(same[:1], negative[:1])).all()


def test_consistency_equals_the_mean_over_all_ordered_pairs():
    gen = torch.Generator().manual_seed(0)
    positive = torch.randn(9, 2, 5, generator=gen) + torch.tensor([1.0, 0, 0, 0, 0])
    negative = torch.randn(9, 2, 5, generator=gen)
    negative[4] = positive[4]  # one zero difference: cosine 0 with everything
    found = difference_consistency(positive, negative)
    for layer in range(2):
        diffs = (positive - negative)[:, layer].double()
        assert float(found[layer]) == pytest.approx(_brute_consistency(diffs), abs=1e-12)


def test_held_out_projection_uses_only_the_other_folds():
    gen = torch.Generator().manual_seed(1)
    positive = torch.randn(6, 2, 4, generator=gen)
    negative = torch.randn(6, 2, 4, generator=gen)
    pos_proj, neg_proj = held_out_projections(positive, negative, folds=6)  # leave one out
    for i in range(6):
        others = [j for j in range(6) if j != i]
        for layer in range(2):
            direction = (positive[others, layer] - negative[others, layer]).mean(0).double()
            unit = direction / direction.norm()
            assert float(pos_proj[i, layer]) == pytest.approx(
                float(positive[i, layer].double() @ unit))
            assert float(neg_proj[i, layer]) == pytest.approx(
                float(negative[i, layer].double() @ unit))
    with pytest.raises(ValueError, match="folds"):
        held_out_projections(positive, negative, folds=1)


def test_separation_and_effect_size_on_constructed_pairs():
    gen = torch.Generator().manual_seed(2)
    negative = torch.randn(40, 2, 8, generator=gen)
    shift = torch.zeros(2, 8)
    shift[0, 3], shift[1, 3] = 5.0, 0.0  # layer 0 separates, layer 1 is noise only
    positive = negative + shift + 0.1 * torch.randn(40, 2, 8, generator=gen)
    found = vector_diagnostics(positive, negative, [7, 9], folds=4)
    assert set(found) == {7, 9}
    strong, noise = found[7], found[9]
    assert strong.separation == 1.0 and strong.n_pairs == 40 and strong.folds == 4
    assert strong.effect_size is not None and strong.effect_size > 3
    assert strong.consistency is not None and strong.consistency > 0.95
    assert noise.consistency is not None and abs(noise.consistency) < 0.1
    assert noise.separation is not None and 0.25 < noise.separation < 0.75
    reversed_ = vector_diagnostics(negative, positive, [7, 9], folds=4)[7]
    assert reversed_.separation == 1.0  # the direction flips with the sides: still separates


def test_one_pair_leaves_held_out_measures_undefined():
    one = vector_diagnostics(torch.ones(1, 2, 3), torch.zeros(1, 2, 3), [0, 1])
    assert one[0] == LayerDiagnostics(0, 1, 0, None, None, None)
    with pytest.raises(ValueError, match="layer numbers"):
        vector_diagnostics(torch.ones(2, 2, 3), torch.zeros(2, 2, 3), [0])


def test_meta_form_is_strict_json_and_round_trips():
    gen = torch.Generator().manual_seed(3)
    found = vector_diagnostics(torch.randn(5, 2, 4, generator=gen),
                               torch.randn(5, 2, 4, generator=gen), [3, 12])
    stored = diagnostics_to_meta(found)
    assert list(stored) == ["3", "12"]
    assert diagnostics_from_meta(json.loads(json.dumps(stored, allow_nan=False))) == found
    with pytest.raises(ValueError, match="lacks"):
        LayerDiagnostics.from_dict({"layer": 1})


def test_caa_vector_stores_diagnostics_that_survive_save_and_load(tiny_model, tmp_path):
    pairs = [ContrastivePair(f"Question {i} about {'dogs ' * (i % 3 + 1)}(", "A", "B")
             for i in range(6)]
    vector = caa_vector(tiny_model, pairs, layers=[1, 3], folds=3, dataset="toy")
    positive, negative = contrastive_activations(tiny_model, pairs, layers=[1, 3])
    expected = vector_diagnostics(positive, negative, [1, 3], folds=3, aggregator=mean_diff)
    assert diagnostics_from_meta(vector.meta.diagnostics) == expected
    loaded = SteeringVector.load(vector.save(tmp_path / "v.safetensors"))
    assert loaded.equals(vector)
    assert caa_vector(tiny_model, pairs, layers=[1], diagnostics=False).meta.diagnostics == {}
    with pytest.raises(ValueError, match="folds"):
        caa_vector(tiny_model, pairs, layers=[1], folds=1)


def test_caa_vector_stratifies_its_diagnostics_by_the_matching_answer(tiny_model):
    letters = ["A", "A", "A", "A", "B", "B", "A", "B", "B", "B"]
    pairs = [ContrastivePair(f"Question {i} about {'dogs ' * (i % 3 + 1)}(", m,
                             "B" if m == "A" else "A") for i, m in enumerate(letters)]
    positive, negative = contrastive_activations(tiny_model, pairs, layers=[1, 3])
    stratified = vector_diagnostics(positive, negative, [1, 3], folds=5, strata=letters)
    plain = vector_diagnostics(positive, negative, [1, 3], folds=5)
    assert stratified != plain  # precondition: the folds differ on these pairs
    vector = caa_vector(tiny_model, pairs, layers=[1, 3], folds=5)
    assert diagnostics_from_meta(vector.meta.diagnostics) == stratified
    off = caa_vector(tiny_model, pairs, layers=[1, 3], folds=5, strata=None)
    assert diagnostics_from_meta(off.meta.diagnostics) == plain
    with pytest.raises(InvalidValueError, match="strata 'letter'"):
        caa_vector(tiny_model, pairs, layers=[1], strata="letter")  # type: ignore[arg-type]


def _letter_only_pairs(n_per_letter: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor,
                                                                   list[str]]:
    """Pairs whose only signal is the answer letter: the matching side carries its letter's
    large component, the other side the other letter's; nothing encodes the behaviour."""
    gen = torch.Generator().manual_seed(seed)
    d = 16
    letter = {"A": torch.zeros(d), "B": torch.zeros(d)}
    letter["A"][0], letter["B"][1] = 87.0, 87.0  # ~87 against ~1 on the embedded model
    letters = ["A"] * n_per_letter + ["B"] * n_per_letter
    other = {"A": "B", "B": "A"}
    positive = torch.stack([letter[x] + torch.randn(d, generator=gen) for x in letters])
    negative = torch.stack([letter[other[x]] + torch.randn(d, generator=gen) for x in letters])
    return positive[:, None].double(), negative[:, None].double(), letters


def test_stratified_folds_give_chance_separation_when_only_the_letter_differs():
    positive, negative, letters = _letter_only_pairs(30)
    random_folds = vector_diagnostics(positive, negative, [0], folds=5)[0].separation
    loo = vector_diagnostics(positive, negative, [0], folds=60)[0].separation
    stratified = [vector_diagnostics(positive, negative, [0], folds=5, seed=seed,
                                     strata=letters)[0].separation for seed in range(5)]
    # the known bias of random folds on a balanced set: below chance, 0 for leave-one-out
    assert loo == pytest.approx(0.0, abs=0.02)
    assert random_folds < 0.45
    for value in stratified:
        assert value == pytest.approx(0.5, abs=0.05)


def test_stratified_folds_keep_each_stratum_even_across_folds():
    from actsteer.diagnostics import fold_of

    strata = ["A"] * 13 + ["B"] * 7
    fold = fold_of(20, 5, seed=3, strata=strata)
    for f in range(5):
        members = [strata[i] for i in range(20) if int(fold[i]) == f]
        assert len(members) == 4
        assert members.count("A") in (2, 3) and members.count("B") in (1, 2)


def test_diagnostics_table_shows_each_layer_once_and_counts_as_counts(tiny_model):
    from actsteer.diagnostics import diagnostics_table

    pairs = [ContrastivePair(f"Item {i} about {'dogs ' * (i + 1)}(", "A", "B") for i in range(6)]
    vector = caa_vector(tiny_model, pairs, dataset="t")
    table = diagnostics_table(vector)
    header = next(line for line in table.splitlines() if line.lstrip().startswith("layer"))
    assert header.split().count("layer") == 1
    assert "n_pairs" not in header and "folds" not in header
    assert table.splitlines()[0] == "6 pairs, 5-fold held-out separation"
    assert len([line for line in table.splitlines() if line[:5].strip().isdigit()]) == 4
