"""The behaviour probe: a linear classifier on one layer's hidden states.

A :class:`Probe` holds the unit direction along which activations *with* the behaviour
score higher than those without, plus the scale and bias of the fitted classifier (so it
still classifies) and where its training data came from. :func:`train_probe` fits one by
L2-regularised logistic regression (:func:`actsteer.aggregators.logistic_fit`);
:meth:`Probe.from_direction` and :meth:`Probe.from_vector` wrap a direction found another
way, e.g. a CAA :class:`~actsteer.vector.SteeringVector`.

Example::

    pos, neg = actsteer.extraction.contrastive_activations(model, pairs, layers=[12])
    probe = train_probe(pos[:, 0], neg[:, 0], layer=12)     # probe.accuracy, probe.n
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.aggregators import logistic_fit
from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.sites import SITES
from actsteer.vector import SteeringVector

__all__ = ["Probe", "ProbeProvenance", "train_probe"]


@dataclass(frozen=True)
class ProbeProvenance:
    """Where a probe came from; travels with every edit made from it."""

    layer: int | None = None
    """Layer whose activations it was trained on (``None``: not known)."""
    site: str = "resid_post"
    n_positive: int = 0
    """Training examples with the behaviour (0 for a direction given directly)."""
    n_negative: int = 0
    accuracy: float | None = None
    """Training accuracy of the classifier; ``None`` for a direction given directly."""

    def __post_init__(self) -> None:
        if self.layer is not None and (not _is_int(self.layer) or self.layer < 0):
            raise InvalidValueError(f"probe layer must be an int >= 0 or None, got {self.layer!r}")
        if self.site not in SITES:
            raise InvalidValueError(f"unknown site {self.site!r}; valid sites: {', '.join(SITES)}")
        for name in ("n_positive", "n_negative"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise InvalidValueError(f"probe {name} must be an int >= 0, got {value!r}")
        accuracy = self.accuracy
        if accuracy is not None and (not isinstance(accuracy, (int, float))
                                     or isinstance(accuracy, bool) or not 0 <= accuracy <= 1):
            raise InvalidValueError(f"probe accuracy must be in [0, 1] or None, got {accuracy!r}")


@dataclass(frozen=True, eq=False)
class Probe:
    """A linear behaviour probe: ``logit(x) = scale * (x @ direction) + bias``.

    ``direction`` is a unit vector in the residual stream pointing towards the
    behaviour's side. Equality is :meth:`equals` (tensors compared exactly).
    """

    direction: Float[Tensor, " d_model"]
    bias: float = 0.0
    scale: float = 1.0
    """Norm of the fitted weight: the logit's change per unit of projection."""
    provenance: ProbeProvenance = field(default_factory=ProbeProvenance)

    def __post_init__(self) -> None:
        direction = _unit(self.direction, "probe direction")
        norm = float(direction.double().norm())
        if abs(norm - 1.0) > 1e-4:
            raise InvalidValueError(f"probe direction has norm {norm:.6g}, expected 1; build "
                                    "the probe with Probe.from_direction, which normalises")
        object.__setattr__(self, "direction", direction)
        for name in ("bias", "scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidValueError(f"probe {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.scale <= 0:
            raise InvalidValueError(f"probe scale must be > 0, got {self.scale}")

    @property
    def d_model(self) -> int:
        return int(self.direction.shape[0])

    @property
    def layer(self) -> int | None:
        return self.provenance.layer

    @property
    def accuracy(self) -> float | None:
        return self.provenance.accuracy

    @property
    def n(self) -> int:
        """Training examples, both sides."""
        return self.provenance.n_positive + self.provenance.n_negative

    def logits(self, activations: Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        """The classifier's logit that each activation shows the behaviour."""
        x = activations.detach().double().cpu()
        return self.scale * (x @ self.direction.double()) + self.bias

    def predict(self, activations: Float[Tensor, "n d_model"]) -> Tensor:
        """``True`` where the probe classifies an activation as showing the behaviour."""
        return self.logits(activations) > 0

    def flipped(self) -> Probe:
        """The probe for the other side (direction and bias negated, sides swapped): its
        surgery targets the opposite behaviour, through a different region."""
        prov = self.provenance
        return Probe(-self.direction, -self.bias, self.scale,
                     replace(prov, n_positive=prov.n_negative, n_negative=prov.n_positive))

    def equals(self, other: Probe) -> bool:
        return (self.bias == other.bias and self.scale == other.scale
                and self.provenance == other.provenance
                and torch.equal(self.direction, other.direction))

    @classmethod
    def from_direction(cls, direction: Float[Tensor, " d_model"], *, layer: int | None = None,
                       site: str = "resid_post") -> Probe:
        """A probe from a direction found some other way (normalised to unit length; no
        classifier behind it, so no accuracy)."""
        unit = _unit(direction, "probe direction")
        return cls(unit / unit.double().norm().float(),
                   provenance=ProbeProvenance(layer=layer, site=site))

    @classmethod
    def from_vector(cls, vector: SteeringVector, layer: int) -> Probe:
        """A probe along ``vector``'s direction at ``layer`` (e.g. a CAA vector: positive
        minus negative, so it points towards the behaviour)."""
        probe = cls.from_direction(vector.at(layer), layer=layer, site=vector.site)
        n = vector.meta.n_items
        return replace(probe, provenance=replace(probe.provenance, n_positive=n, n_negative=n))


def as_probe(probe: Probe | Tensor) -> Probe:
    """``probe``, or a direction tensor wrapped by :meth:`Probe.from_direction`."""
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, Tensor):
        return Probe.from_direction(probe)
    raise InvalidTypeError(f"expected a Probe or a direction tensor [d_model], got "
                           f"{type(probe).__name__}; a SteeringVector needs a layer: "
                           "Probe.from_vector(vector, layer)")


def train_probe(positive: Float[Tensor, "n d_model"], negative: Float[Tensor, "m d_model"], *,
                layer: int, site: str = "resid_post", l2: float = 1e-2, steps: int = 100
                ) -> Probe:
    """Fit a logistic-regression behaviour probe on activations with (``positive``) and
    without (``negative``) the behaviour, read at ``layer`` (and ``site``, recorded).

    The sides may differ in size. ``l2`` and ``steps`` go to
    :func:`~actsteer.aggregators.logistic_fit`. The returned probe's accuracy is measured
    on the training activations.
    """
    for name, acts in (("positive", positive), ("negative", negative)):
        if not isinstance(acts, Tensor):
            raise InvalidTypeError(f"{name} must be a tensor [n, d_model], got "
                                   f"{type(acts).__name__}")
        if acts.dim() != 2 or acts.shape[0] == 0:
            raise InvalidValueError(
                f"{name} activations must be [n, d_model] with n >= 1, got shape "
                f"{tuple(acts.shape)}; from read_activations' [n, layer, d_model] take one "
                "layer, acts[:, i]")
        if not bool(torch.isfinite(acts).all()):
            raise InvalidValueError(f"{name} activations contain NaN or inf")
    if positive.shape[1] != negative.shape[1]:
        raise InvalidValueError(f"positive has d_model {positive.shape[1]} but negative has "
                                f"{negative.shape[1]}; read both at the same site of one model")
    if not _is_int(layer) or layer < 0:
        raise InvalidValueError(f"layer must be an int >= 0, got {layer!r}")
    x_pos, x_neg = positive.detach().cpu().double(), negative.detach().cpu().double()
    weight, bias = logistic_fit(x_pos, x_neg, l2=l2, steps=steps)
    scale = float(weight.norm())
    if not scale > 0 or not math.isfinite(scale):
        raise InvalidValueError(f"the fitted probe weight has norm {scale}; the two sides "
                                "cannot be told apart (identical activations?)")
    correct = int(((x_pos @ weight + bias) > 0).sum()) + int(((x_neg @ weight + bias) <= 0).sum())
    provenance = ProbeProvenance(layer=layer, site=site, n_positive=len(x_pos),
                                 n_negative=len(x_neg),
                                 accuracy=correct / (len(x_pos) + len(x_neg)))
    return Probe((weight / scale).float(), float(bias), scale, provenance)


def _unit(direction: Tensor, name: str) -> Tensor:
    """``direction`` as float32 on the CPU, checked to be a finite non-zero vector."""
    if not isinstance(direction, Tensor):
        raise InvalidTypeError(f"{name} must be a tensor [d_model], got "
                               f"{type(direction).__name__}")
    if direction.dim() != 1 or direction.shape[0] == 0:
        raise InvalidValueError(f"{name} must be one vector [d_model], got shape "
                                f"{tuple(direction.shape)}")
    out = direction.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(out).all()):
        raise InvalidValueError(f"{name} contains NaN or inf")
    if not bool(out.any()):
        raise InvalidValueError(f"{name} is zero; a probe needs a direction")
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
