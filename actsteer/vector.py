"""Steering vectors as values: one direction per layer plus the provenance to trust it.

Example::

    v = actsteer.caa_vector(model, pairs)           # every layer, resid_post
    v15 = (2.0 * v).select([15])                    # new values; v is unchanged
    v.save("myopia.safetensors")
    same = actsteer.SteeringVector.load("myopia.safetensors", model=model)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.atomic import atomic_write
from actsteer.errors import (
    ActsteerError,
    InvalidTypeError,
    InvalidValueError,
    MissingFileError,
    MissingKeyError,
)
from actsteer.sites import SITES
from actsteer.vector_meta import VectorFileError, VectorMeta, parse_header


class VectorMismatchError(ActsteerError, ValueError):
    """A vector that does not fit the model (width, depth) or another vector."""


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Directions ``[len(layers), d_model]`` for ``layers`` at one hook ``site``.

    One extraction reads every layer, so a single value serves any layer choice later.
    Layers count from 0 (no negative indices); directions are floating point (an integer
    tensor is refused: convert it with ``.float()``). Equality is :meth:`equals` (tensors
    compared exactly), not ``==``.
    """

    directions: Float[Tensor, "layer d_model"]
    layers: tuple[int, ...]
    site: str = "resid_post"
    meta: VectorMeta = field(default_factory=VectorMeta)

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise InvalidValueError(f"unknown site {self.site!r}; valid sites: {', '.join(SITES)}")
        if self.directions.dim() != 2:
            raise VectorMismatchError(
                f"directions must be [layer, d_model], got shape {tuple(self.directions.shape)}"
            )
        if self.directions.shape[0] != len(self.layers):
            raise VectorMismatchError(
                f"{self.directions.shape[0]} directions for {len(self.layers)} layers "
                f"{list(self.layers)}"
            )
        if len(set(self.layers)) != len(self.layers):
            raise VectorMismatchError(f"duplicate layers in {list(self.layers)}")
        if any(layer < 0 for layer in self.layers):
            raise InvalidValueError(
                f"layers {list(self.layers)} include a negative index; layers count from 0 "
                "(layer >= 0), so give block numbers as the model counts them")
        if not self.directions.is_floating_point():
            raise InvalidTypeError(
                f"directions have dtype {self.directions.dtype}; steering directions must be "
                "floating point: convert them first (e.g. directions.float())")
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))

    # -- access ---------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.directions.shape[1])

    def norms(self) -> dict[int, float]:
        """L2 norm of the direction at each layer."""
        values = self.directions.float().norm(dim=-1).tolist()
        return dict(zip(self.layers, values, strict=True))

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        """The direction at ``layer``."""
        try:
            return self.directions[self.layers.index(layer)]
        except ValueError:
            raise MissingKeyError(
                f"layer {layer} not in this vector; it has layers {list(self.layers)}"
                ) from None

    def select(self, layers: int | Sequence[int]) -> SteeringVector:
        """A vector with only ``layers``."""
        wanted = [layers] if isinstance(layers, int) else list(layers)
        rows = torch.stack([self.at(layer) for layer in wanted])
        return replace(self, directions=rows, layers=tuple(wanted),
                       meta=self.meta.then(f"select({wanted})"))

    # -- arithmetic -----------------------------------------------------------------
    def scaled(self, factor: float) -> SteeringVector:
        return replace(self, directions=self.directions * factor,
                       meta=self.meta.then(f"scaled({factor:g})"))

    def __mul__(self, factor: float) -> SteeringVector:
        return self.scaled(factor)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self.scaled(-1.0)

    def _aligned(self, other: SteeringVector) -> Tensor:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.site != self.site:
            raise VectorMismatchError(f"cannot combine sites {self.site!r} and {other.site!r}")
        if other.d_model != self.d_model:
            raise VectorMismatchError(f"d_model differs: {self.d_model} vs {other.d_model}")
        missing = [layer for layer in self.layers if layer not in other.layers]
        if missing:
            raise VectorMismatchError(
                f"the other vector lacks layers {missing}; select common layers first"
            )
        return torch.stack([other.at(layer) for layer in self.layers]).to(self.directions)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        rows = self._aligned(other)
        return replace(self, directions=self.directions + rows,
                       meta=self.meta.then(f"plus({other.meta.dataset or other.meta.method})"))

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        rows = self._aligned(other)
        return replace(self, directions=self.directions - rows,
                       meta=self.meta.then(f"minus({other.meta.dataset or other.meta.method})"))

    def normalized(self) -> SteeringVector:
        """Unit norm at every layer (zero rows stay zero)."""
        norms = self.directions.norm(dim=-1, keepdim=True)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        return replace(self, directions=self.directions / safe, meta=self.meta.then("normalized"))

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> SteeringVector:
        return replace(self, directions=self.directions.to(device=device, dtype=dtype))

    def permuted(self, seed: int = 0) -> SteeringVector:
        """Control: each layer's entries shuffled (same norm, direction destroyed)."""
        generator = torch.Generator().manual_seed(seed)
        rows = [row[torch.randperm(self.d_model, generator=generator).to(row.device)]
                for row in self.directions]
        return replace(self, directions=torch.stack(rows),
                       meta=self.meta.then(f"permuted(seed={seed})"))

    def random_like(self, seed: int = 0) -> SteeringVector:
        """Control: a random Gaussian direction per layer with the same norm."""
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(self.directions.shape, generator=generator).to(self.directions)
        noise = noise / noise.norm(dim=-1, keepdim=True) * self.directions.norm(
            dim=-1, keepdim=True)
        return replace(self, directions=noise, meta=self.meta.then(f"random_like(seed={seed})"))

    def equals(self, other: SteeringVector) -> bool:
        """Same layers, site, metadata and exactly equal tensors."""
        return (
            self.layers == other.layers
            and self.site == other.site
            and self.meta == other.meta
            and self.directions.dtype == other.directions.dtype
            and torch.equal(self.directions.cpu(), other.directions.cpu())
        )

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``.safetensors`` (tensors) with JSON metadata inside, atomically."""
        from safetensors.torch import save_file

        header = {"actsteer": json.dumps({"site": self.site, "layers": list(self.layers),
                                          "meta": self.meta.to_dict()})}
        tensors = {"directions": self.directions.detach().cpu().contiguous()}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: Any | None = None) -> SteeringVector:
        """Read a file written by :meth:`save` (safetensors only: never unpickles).

        With ``model``, check that width and layers fit it and warn if the weight
        processing differs from the model the vector came from.
        """
        from safetensors import SafetensorError, safe_open

        source = Path(path)
        if not source.is_file():
            raise MissingFileError(f"no vector file at {source}")
        try:
            with safe_open(str(source), framework="pt") as handle:
                header = handle.metadata() or {}
                if set(handle.keys()) != {"directions"}:
                    raise VectorFileError(
                        f"{source} holds tensors {sorted(handle.keys())}, expected 'directions'")
                directions = handle.get_tensor("directions")
        except (SafetensorError, OSError, UnicodeDecodeError) as error:
            raise VectorFileError(
                f"{source} is not a safetensors file ({error}); actsteer never loads pickles, "
                "re-save the vector with SteeringVector.save"
            ) from None
        if "actsteer" not in header:
            raise VectorFileError(f"{source} has no actsteer metadata; save it with actsteer")
        layers, site, meta = parse_header(source, header["actsteer"])
        try:
            vector = cls(directions, layers, site, meta)
        except (VectorMismatchError, InvalidValueError, InvalidTypeError) as error:
            raise VectorFileError(f"{source}: {error}") from None
        if model is not None:
            vector.check_fits(model)
        return vector

    def check_fits(self, model: Any) -> None:
        """Raise :class:`VectorMismatchError` if this vector cannot be applied to ``model``."""
        d_model, n_layers = int(model.cfg.d_model), int(model.cfg.n_layers)
        if self.d_model != d_model:
            raise VectorMismatchError(
                f"vector has d_model {self.d_model} but the model has {d_model}: it was "
                f"extracted from {self.meta.model!r}; extract a vector from this model")
        beyond = [layer for layer in self.layers if layer >= n_layers]
        if beyond:
            raise VectorMismatchError(
                f"vector layers {beyond} do not exist in a {n_layers}-layer model; "
                "select() layers the model has")
        from actsteer.models import model_info

        processing = model_info(model).weight_processing
        if "unknown" not in (processing, self.meta.weight_processing) and (
            processing != self.meta.weight_processing
        ):
            warnings.warn(
                f"vector extracted with weight processing {self.meta.weight_processing!r} "
                f"applied to a model with {processing!r}; residual coordinates may differ",
                stacklevel=3,
            )


def match_norms(vectors: Sequence[SteeringVector], layer: int,
                target: float | None = None) -> list[SteeringVector]:
    """CAA-style common norm: rescale each vector at ``layer`` to ``target`` (default: the
    mean of their norms at that layer). Returns single-layer vectors."""
    if not vectors:
        raise InvalidValueError("match_norms needs at least one vector")
    chosen = [v.select(layer) for v in vectors]
    norms = [float(v.directions.norm()) for v in chosen]
    if any(n == 0 for n in norms):
        raise InvalidValueError(f"cannot rescale a zero vector at layer {layer}")
    goal = sum(norms) / len(norms) if target is None else target
    return [v.scaled(goal / n) for v, n in zip(chosen, norms, strict=True)]
