"""The detection axis: how well a behaviour's vector tells its completions from the contrast's.

AxBench scores the ROC-AUC of a concept's latent on texts with and without the concept.
Here the latent is the CAA vector's projection at its layer, the activation averaged over
each completion's answer tokens (as the vector is read, ``read="answer_mean"``). Built-in
behaviours have 16 completions a side, too few to spare a held-out set, so the pairs are
dealt into ``folds`` folds (:func:`actsteer.diagnostics.fold_of`) and each fold is
projected on the unit vector built from the other folds only
(:func:`actsteer.diagnostics.held_out_projections`); the AUC pools every held-out
projection. The same holds for a user's behaviour file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from actsteer.aggregators import resolve_aggregator
from actsteer.data.expressed import ExpressedBehaviour
from actsteer.diagnostics import held_out_projections
from actsteer.errors import InvalidValueError
from actsteer.executor import register_task
from actsteer.extraction import contrastive_activations

__all__ = ["detection_auc", "roc_auc"]


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The probability that a random positive scores above a random negative (ties count
    one half): the area under the ROC curve (the Mann-Whitney statistic).

    Example:
        >>> roc_auc([3.0, 2.0], [1.0, 2.0])
        0.875
    """
    if not positive or not negative:
        raise InvalidValueError("roc_auc needs at least one positive and one negative score")
    pos = torch.tensor(list(positive), dtype=torch.float64)[:, None]
    neg = torch.tensor(list(negative), dtype=torch.float64)[None, :]
    wins = (pos > neg).double() + 0.5 * (pos == neg).double()
    return float(wins.mean())


def detection_auc(model: Any, behaviour: ExpressedBehaviour, layer: int, *, folds: int = 4,
                  seed: int = 0, batch_size: int = 16, others: Sequence[str] = (),
                  learned: tuple[torch.Tensor, Sequence[int]] | None = None) -> dict[str, Any]:
    """Held-out ROC-AUC of the behaviour's vector at ``layer`` (module docstring), with the
    held-out projections it was computed from; ``others`` (``pca``, ``probe``) and
    ``learned`` (its ``[d_model]`` direction and held-out pair indices) add
    ``by_vector[name] = {"auc", "n_pairs"}``."""
    if len(behaviour) < 2:
        raise InvalidValueError(f"behaviour {behaviour.name!r} has {len(behaviour)} completion "
                                "pairs; detection folds need at least 2")
    positive, negative = contrastive_activations(model, behaviour.pairs(), layers=[layer],
                                                 read="answer_mean", batch_size=batch_size)
    k = min(folds, len(behaviour))
    pos, neg = held_out_projections(positive, negative, folds=k, seed=seed)
    pos_list, neg_list = pos[:, 0].tolist(), neg[:, 0].tolist()
    by_vector: dict[str, dict[str, Any]] = {}
    for name in others:
        _, aggregate = resolve_aggregator(name)
        p, n = held_out_projections(positive, negative, folds=k, seed=seed,
                                    aggregator=aggregate)
        by_vector[name] = {"auc": round(roc_auc(p[:, 0].tolist(), n[:, 0].tolist()), 5),
                           "n_pairs": len(behaviour)}
    if learned is not None:
        direction, held = learned
        rows = torch.as_tensor(list(held), dtype=torch.long)
        d = direction.detach().double().to(positive.device)
        by_vector["learned"] = {
            "auc": round(roc_auc((positive[rows, 0].double() @ d).tolist(),
                                 (negative[rows, 0].double() @ d).tolist()), 5),
            "n_pairs": len(held)}
    return {"auc": round(roc_auc(pos_list, neg_list), 5), "folds": k, "layer": layer,
            "n_pairs": len(behaviour), "behaviour": [round(x, 4) for x in pos_list],
            "contrast": [round(x, 4) for x in neg_list], "by_vector": by_vector}


@register_task("harness-detection")
def _detection_task(model: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`detection_auc` of ``behaviour`` at ``layer``."""
    return detection_auc(model, payload["behaviour"], int(payload["layer"]),
                         folds=int(payload["folds"]), seed=int(payload.get("seed", 0)),
                         batch_size=int(payload.get("batch_size", 16)),
                         others=tuple(payload.get("others", ())),
                         learned=payload.get("learned"))
