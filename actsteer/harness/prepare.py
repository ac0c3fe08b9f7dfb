"""What the judged rows are built from, per behaviour: the other vectors and the surgery edits.

All are read at the harness's layer from the behaviour's completion pairs, over the
answer tokens (``read="answer_mean"``, as the CAA vector):

* ``pca`` and ``probe`` — :func:`actsteer.caa_vector` with ``method="pca"`` / ``"probe"``;
* ``learned`` — :func:`actsteer.learned.learn_vector` with :data:`LEARN` (BiPO from a
  seeded random start, a held-out quarter of the pairs), checkpointed under the run's
  folder so that an interrupted run resumes its training too;
* ``surgery`` — the surgery study's recipe (``build_arms`` in
  :mod:`actsteer.paper.surgery_vs_steering.arms`):
  a logistic probe, and the authors' share of gate rows most inversely aligned with the
  side to remove, for raising (the contrast's probe) and for lowering (the behaviour's).

Each is deterministic given the model, the pairs and the seed, so a resumed run rebuilds
the same interventions (their identities match the stored cells).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from actsteer.data.expressed import ExpressedBehaviour
from actsteer.extraction import caa_vector, contrastive_activations
from actsteer.learned import LearnConfig, learn_vector
from actsteer.paper.surgery_vs_steering.arms import default_k
from actsteer.surgery.edit import SurgeryEdit, make_edit
from actsteer.surgery.probe import train_probe
from actsteer.surgery.region import select_region
from actsteer.vector import SteeringVector

__all__ = ["LEARN", "NEEDS", "learned_checkpoint", "prepare"]

NEEDS: tuple[str, ...] = ("pca", "probe", "learned", "surgery")
"""What a method may need besides CAA (:attr:`actsteer.harness.methods.Method.needs`)."""

LEARN = LearnConfig(steps=6, eval_every=3, checkpoint_every=3)
"""How the harness trains its learned vector: 6 BiPO steps of 4 pairs, Adam at 0.5, the
measured budget of ``docs/learned.md`` (the held-out loss fell 0.693 -> 0.375 on sentiment)."""


def learned_checkpoint(out_dir: str | Path, behaviour: str) -> Path:
    """Where the learned vector of ``behaviour`` is checkpointed inside a run's folder."""
    return Path(out_dir) / "learned" / f"{behaviour}.safetensors"


def _surgery_edits(model: Any, behaviour: ExpressedBehaviour, layer: int,
                   batch_size: int) -> dict[str, SurgeryEdit]:
    positive, negative = contrastive_activations(model, behaviour.pairs(), layers=[layer],
                                                 read="answer_mean", batch_size=batch_size)
    probe = train_probe(positive[:, 0], negative[:, 0], layer=layer)
    k = default_k(model)
    edits = {}
    for goal, avoid in (("raise", probe.flipped()), ("lower", probe)):
        edits[goal] = make_edit(model, avoid, select_region(model, avoid, k=k, per="all"))
    return edits


def prepare(model: Any, behaviour: ExpressedBehaviour, layer: int, needs: Iterable[str], *,
            out_dir: str | Path, batch_size: int = 16, progress: bool = False
            ) -> tuple[dict[str, SteeringVector], dict[str, SurgeryEdit]]:
    """The vectors (by name) and surgery edits (by goal, strength 1) that ``needs`` asks for."""
    wanted = set(needs)
    vectors: dict[str, SteeringVector] = {}
    for method in ("pca", "probe"):
        if method in wanted:
            vectors[method] = caa_vector(model, behaviour.pairs(), layers=[layer],
                                         read="answer_mean", method=method,
                                         dataset=behaviour.name, diagnostics=False,
                                         batch_size=batch_size)
    if "learned" in wanted:
        path = learned_checkpoint(out_dir, behaviour.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors["learned"] = learn_vector(model, behaviour, layer=layer, config=LEARN,
                                          checkpoint=path, progress=progress)
    edits = _surgery_edits(model, behaviour, layer, batch_size) if "surgery" in wanted else {}
    return vectors, edits
