"""A model surgery as a value: which gate rows, what is added to each, and its provenance.

A :class:`SurgeryEdit` adds ``strength * direction`` to each selected row of the MLP gate
projection, in its ``basis``: checkpoint coordinates (Hugging Face ``gate_proj.weight``
rows, the paper's code) or folded ones (``ln2.weight ⊙ row``, the basis the probe lives
in; a checkpoint row then gets ``strength * direction / ln2.weight``; the derivation is in
:mod:`actsteer.surgery.gates`). ``direction`` is the probe's unit direction, so
``strength`` is the one number to sweep: 0 is the identity, the sign picks the way.
Nothing here touches a model; apply an edit with :mod:`actsteer.surgery.apply`.

Example::

    edit = make_edit(model, probe, select_region(model, probe, layers=[10, 12], k=64),
                     strength=2.0)
    edit.save("detox.safetensors")
    same = SurgeryEdit.load("detox.safetensors", model=model)
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer._version import __version__
from actsteer.atomic import atomic_write
from actsteer.errors import InvalidValueError, MissingFileError
from actsteer.models import model_info
from actsteer.surgery.errors import SurgeryError, SurgeryFileError
from actsteer.surgery.gates import Basis, check_basis
from actsteer.surgery.probe import Probe, ProbeProvenance, as_probe
from actsteer.surgery.region import GateRows, Region

__all__ = ["SurgeryEdit", "make_edit"]

_HEADER = "actsteer_surgery"
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class SurgeryEdit(GateRows):
    """Add ``strength * direction`` to gate rows ``rows[L]`` of each layer ``L``.

    Equality is :meth:`equals` (tensors compared exactly), not ``==``.
    """

    direction: Float[Tensor, " d_model"]
    """Unit probe direction, in ``basis`` coordinates."""
    rows: Mapping[int, tuple[int, ...]] = field(hash=False)
    """Layer -> neuron indices (ascending, distinct) whose gate rows are edited."""
    n_layers: int
    d_mlp: int
    strength: float = 1.0
    model: str = "unknown"
    """The model the region was selected on (:func:`actsteer.models.model_info` name)."""
    threshold: float | None = None
    k: int | None = None
    per: str = "layer"
    probe: ProbeProvenance = field(default_factory=ProbeProvenance)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    actsteer_version: str = __version__
    history: tuple[str, ...] = ()
    """Operations since the edit was made, oldest first (e.g. ``"scaled(2)"``)."""
    basis: Basis = "checkpoint"
    """Where the rows were compared and the step is added: ``"checkpoint"`` (the paper's
    code) or ``"folded"`` (:data:`~actsteer.surgery.gates.Basis`). Files written before
    the field existed hold checkpoint-basis edits and load as such."""

    def __post_init__(self) -> None:
        check_basis(self.basis)
        direction = as_probe(self.direction).direction  # float32, CPU, unit, finite
        if not torch.allclose(direction, self.direction.detach().to("cpu", torch.float32),
                              rtol=0, atol=1e-6):
            raise InvalidValueError("an edit's direction must be a unit vector; pass "
                                    "probe.direction (or Probe.from_direction(v).direction)")
        object.__setattr__(self, "direction", self.direction.detach().to("cpu", torch.float32))
        if (not isinstance(self.strength, (int, float)) or isinstance(self.strength, bool)
                or not math.isfinite(self.strength)):
            raise InvalidValueError(f"strength must be a finite number, got {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))
        for name in ("n_layers", "d_mlp"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InvalidValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.threshold is not None and self.k is not None:
            raise InvalidValueError("an edit records a threshold or a k, not both")
        if self.threshold is not None and (
                not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool)
                or not -1.0 <= self.threshold <= 1.0):
            raise InvalidValueError(f"threshold must be a cosine in [-1, 1] or None, got "
                                    f"{self.threshold!r}")
        if self.k is not None and (not _is_int(self.k) or self.k < 1):
            raise InvalidValueError(f"k must be an int >= 1 or None, got {self.k!r}")
        if self.per not in ("layer", "all"):
            raise InvalidValueError(f"per must be 'layer' or 'all', got {self.per!r}")
        for name in ("model", "created", "actsteer_version"):
            if not isinstance(getattr(self, name), str):
                raise InvalidValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.probe, ProbeProvenance):
            raise InvalidValueError(f"probe must be a ProbeProvenance, got {self.probe!r}")
        object.__setattr__(self, "rows", _checked_rows(self.rows, self.n_layers, self.d_mlp))

    # -- access ---------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.direction.shape[0])

    @property
    def added(self) -> Float[Tensor, " d_model"]:
        """What is added to each selected row in :attr:`basis` coordinates:
        ``strength * direction``."""
        return self.strength * self.direction

    def checkpoint_step(self, gain: Float[Tensor, " d_model"] | None
                        ) -> Float[Tensor, " d_model"]:
        """The step (float64, CPU) added to each selected checkpoint ``gate_proj`` row of
        a layer whose ``ln2.weight`` is ``gain``: ``strength * direction`` in the
        checkpoint basis (``gain`` unused), divided by ``gain`` in the folded basis."""
        step = self.strength * self.direction.double()  # no float32 overflow on the way
        if self.basis == "checkpoint":
            return step
        if gain is None:
            raise SurgeryError("a folded-basis edit needs the layer's ln2.weight to reach "
                               "checkpoint rows")
        return step / gain.detach().to("cpu", torch.float64)

    # -- operations -----------------------------------------------------------------
    def scaled(self, factor: float) -> SurgeryEdit:
        """The same rows with ``strength * factor``."""
        return replace(self, strength=self.strength * factor,
                       history=(*self.history, f"scaled({factor:g})"))

    def with_strength(self, strength: float) -> SurgeryEdit:
        """The same rows with this ``strength`` (for sweeps)."""
        return replace(self, strength=strength,
                       history=(*self.history, f"with_strength({strength:g})"))

    def equals(self, other: SurgeryEdit) -> bool:
        """Same rows, numbers, provenance and exactly equal direction."""
        mine, theirs = _metadata(self), _metadata(other)
        return mine == theirs and torch.equal(self.direction, other.direction)

    def check_fits(self, model: Any) -> None:
        """Raise :class:`SurgeryError` if this edit's shapes do not fit ``model``; warn if
        it was selected on a model of another name."""
        cfg = model.cfg
        wanted = {"d_model": self.d_model, "n_layers": self.n_layers, "d_mlp": self.d_mlp}
        for name, value in wanted.items():
            if int(getattr(cfg, name)) != value:
                raise SurgeryError(f"the edit has {name} {value} but the model has "
                                   f"{int(getattr(cfg, name))}: it was made on {self.model!r}; "
                                   "select a region on this model")
        name = model_info(model).name
        if "unknown" not in (name, self.model) and name != self.model:
            warnings.warn(f"applying an edit made on {self.model!r} to {name!r}", stacklevel=3)

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``.safetensors`` (the direction) with JSON metadata inside, atomically."""
        from safetensors.torch import save_file

        header = {_HEADER: json.dumps(_metadata(self))}
        tensors = {"direction": self.direction.contiguous()}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: Any | None = None) -> SurgeryEdit:
        """Read a file written by :meth:`save` (never unpickles); with ``model``, check
        that the edit fits it (:meth:`check_fits`)."""
        from safetensors import SafetensorError, safe_open

        source = Path(path)
        if not source.is_file():
            raise MissingFileError(f"no surgery edit file at {source}")
        try:
            with safe_open(str(source), framework="pt") as handle:
                header = handle.metadata() or {}
                if _HEADER not in header:
                    raise SurgeryFileError(
                        f"{source} has no {_HEADER} metadata; it is not a surgery edit saved "
                        "by actsteer (a steering vector? load it with SteeringVector.load)")
                if set(handle.keys()) != {"direction"}:
                    raise SurgeryFileError(f"{source} holds tensors {sorted(handle.keys())}, "
                                           "expected 'direction'")
                direction = handle.get_tensor("direction")
        except (SafetensorError, OSError, UnicodeDecodeError) as error:
            raise SurgeryFileError(f"{source} is not a safetensors file ({error}); actsteer "
                                   "never loads pickles, re-save the edit with "
                                   "SurgeryEdit.save") from None
        try:
            edit = cls(direction, **_parse(header[_HEADER]))
        except SurgeryFileError as error:
            raise SurgeryFileError(f"{source}: {error}") from None
        except (InvalidValueError, TypeError) as error:
            raise SurgeryFileError(f"{source}: {error}; re-save the edit with "
                                   "SurgeryEdit.save") from None
        if model is not None:
            edit.check_fits(model)
        return edit


def make_edit(model: Any, probe: Probe | Tensor, region: Region, *,
              strength: float = 1.0, basis: Basis | None = None) -> SurgeryEdit:
    """The edit adding ``strength * probe.direction`` to ``region``'s rows of ``model``.

    Positive ``strength`` is the paper's surgery (it moves the model away from the
    probe's behaviour); negative reverses the step on the same rows. ``model`` supplies
    the shapes and the name recorded in the edit. ``basis`` (default: the region's) must
    be the one the region was selected in: rows compared in one basis and stepped in the
    other would mix two coordinate systems.
    """
    basis = region.basis if basis is None else check_basis(basis)
    if basis != region.basis:
        raise InvalidValueError(f"basis={basis!r} but the region was selected in the "
                                f"{region.basis!r} basis; select it with basis={basis!r} "
                                "(or leave basis out to use the region's)")
    probe = as_probe(probe)
    cfg = model.cfg
    if probe.d_model != int(cfg.d_model):
        raise InvalidValueError(f"the probe has d_model {probe.d_model} but the model has "
                                f"{int(cfg.d_model)}; train it on this model's activations")
    if region.d_mlp != int(cfg.d_mlp):
        raise InvalidValueError(f"the region was selected on a model with d_mlp {region.d_mlp}, "
                                f"this one has {int(cfg.d_mlp)}; select it on this model")
    return SurgeryEdit(probe.direction, region.rows, n_layers=int(cfg.n_layers),
                       d_mlp=int(cfg.d_mlp), strength=strength, model=model_info(model).name,
                       threshold=region.threshold, k=region.k, per=region.per,
                       probe=probe.provenance, basis=basis)


def _checked_rows(rows: Mapping[int, Any], n_layers: int, d_mlp: int
                  ) -> dict[int, tuple[int, ...]]:
    if not isinstance(rows, Mapping):
        raise InvalidValueError(f"rows must map layer -> neuron indices, got "
                                f"{type(rows).__name__}")
    out: dict[int, tuple[int, ...]] = {}
    for layer in sorted(rows):
        if not _is_int(layer) or not 0 <= layer < n_layers:
            raise InvalidValueError(f"layer {layer!r} is out of range: the model has layers "
                                    f"0..{n_layers - 1}")
        indices = tuple(rows[layer])
        bad = [i for i in indices if not _is_int(i) or not 0 <= i < d_mlp]
        if bad:
            raise InvalidValueError(f"layer {layer}: neuron index {bad[0]!r} is out of range "
                                    f"0..{d_mlp - 1}")
        if list(indices) != sorted(set(indices)):
            raise InvalidValueError(f"layer {layer}: neuron indices must be ascending and "
                                    "distinct")
        out[int(layer)] = indices
    return out


def _metadata(edit: SurgeryEdit) -> dict[str, Any]:
    entries = {f.name: getattr(edit, f.name) for f in fields(edit) if f.name != "direction"}
    entries["rows"] = {str(layer): list(rows) for layer, rows in edit.rows.items()}
    entries["probe"] = asdict(edit.probe)
    entries["history"] = list(edit.history)
    return {"format": _FORMAT, **entries}


def _parse(text: str) -> dict[str, Any]:
    """Keyword arguments of :class:`SurgeryEdit` from its JSON header, checked by kind."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise SurgeryFileError(f"its metadata is not valid JSON ({error})") from None
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise SurgeryFileError(f"its metadata is not a format-{_FORMAT} surgery edit; if a "
                               "newer actsteer wrote it, upgrade actsteer")
    info.pop("format")
    known = {f.name for f in fields(SurgeryEdit)} - {"direction"}
    unknown = sorted(set(info) - known)
    missing = sorted({"rows", "n_layers", "d_mlp"} - set(info))
    if unknown or missing:
        raise SurgeryFileError(f"its metadata has unknown fields {unknown} / lacks {missing}")
    rows, probe = info["rows"], info.get("probe", {})
    if not isinstance(rows, dict) or not all(
            key.isdigit() and isinstance(v, list) and all(_is_int(i) for i in v)
            for key, v in rows.items()):
        raise SurgeryFileError("rows is not an object of layer -> list of neuron indices")
    info["rows"] = {int(key): tuple(v) for key, v in rows.items()}
    probe_fields = {f.name for f in fields(ProbeProvenance)}
    if not isinstance(probe, dict) or not set(probe) <= probe_fields:
        raise SurgeryFileError(f"probe is not an object with fields {sorted(probe_fields)}")
    info["probe"] = ProbeProvenance(**probe)  # checks its own fields
    if not isinstance(info.get("history", []), list):
        raise SurgeryFileError("history is not a list")
    info["history"] = tuple(str(h) for h in info.get("history", []))
    for name in ("n_layers", "d_mlp"):
        if not _is_int(info[name]):
            raise SurgeryFileError(f"{name} is {info[name]!r}, expected an integer")
    return info


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
