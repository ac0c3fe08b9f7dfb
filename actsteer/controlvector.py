"""llama.cpp control vectors: steer a GGUF model in llama.cpp with an actsteer vector.

The format is the one repeng writes and llama.cpp's ``--control-vector`` reads: a GGUF
file with ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the
model's architecture name) and ``controlvector.layer_count`` (how many directions), and
one 1-D float32 tensor ``direction.N`` of width ``n_embd`` per steered layer.

Layer numbering, as llama.cpp implements it (checked in ggml-org/llama.cpp:
``common/common.cpp`` ``common_control_vector_load_one`` stores ``direction.N`` at row
``N - 1`` of its buffer and rejects ``N = 0``; ``src/llama-adapter.cpp``
``llama_adapter_cvec::apply`` gives that row to ``tensors[N]`` for ``N`` in
``1 .. n_layer - 1``, and ``tensors[0]`` never exists; ``src/models/llama.cpp`` calls
``build_cvec(cur, il)``, i.e. ``llama_adapter_cvec::apply_to``, on the output of block
``il`` after both residual additions, at every position): ``direction.N`` is added to the
output of decoder block ``N`` counted from 0. That is actsteer's ``resid_post`` at layer
``N``, so the layer numbers are the same; block 0's output cannot be steered in llama.cpp.

llama.cpp adds the file's directions times the ``--control-vector-scaled`` strength, at
every position; only ``resid_post`` vectors, added at all positions, carry over exactly.

Example::

    vector = actsteer.caa_vector(model, pairs)
    export_control_vector(vector, "myopia.gguf", layers=[15], coefficient=4.0)
    # llama-cli -m smollm2.gguf --control-vector myopia.gguf   (adds 4 x vector at block 15)
    again = import_control_vector("myopia.gguf")             # 4 x vector.at(15), float32
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actsteer.atomic import atomic_write
from actsteer.errors import MissingFileError
from actsteer.vector import SteeringVector, VectorFileError, VectorMeta

ARCHITECTURE = "controlvector"
"""``general.architecture`` of a control-vector GGUF file."""

_HINT_KEY = f"{ARCHITECTURE}.model_hint"
_COUNT_KEY = f"{ARCHITECTURE}.layer_count"
_META_KEY = "actsteer.meta"  # provenance; llama.cpp ignores keys it does not know
_PREFIX = "direction."


class ControlVectorError(VectorFileError):
    """A control vector that cannot be written or read exactly (site, layer, file)."""


def export_control_vector(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    model_hint: str = "llama",
    layers: Sequence[int] | None = None,
    coefficient: float = 1.0,
) -> Path:
    """Write ``coefficient * vector`` at ``layers`` as a llama.cpp control-vector GGUF.

    Args:
        vector: a ``resid_post`` vector (block outputs, where llama.cpp adds). Other
            sites are refused: llama.cpp has no other place to add a vector.
        path: the ``.gguf`` file to write (atomically).
        model_hint: the target model's architecture as llama.cpp names it (``llama``
            for Llama 2 and SmolLM2); stored as ``controlvector.model_hint``.
        layers: which layers to write (default: all of the vector's layers except 0,
            with a warning if 0 is dropped). Each one is steered at once in llama.cpp,
            so pass the layer(s) you steer at, e.g. ``[15]``.
        coefficient: multiplies the directions before writing; llama.cpp's
            ``--control-vector-scaled FILE SCALE`` then multiplies by ``SCALE``, so the
            block output receives ``coefficient * SCALE * vector[layer]``.

    Returns:
        The path written.

    Raises:
        ControlVectorError: another site, layer 0, no layer, or non-finite values.
    """
    if vector.site != "resid_post":
        raise ControlVectorError(
            f"a {vector.site!r} vector cannot be exported exactly: llama.cpp adds control "
            "vectors to block outputs only (actsteer's 'resid_post'); extract the vector "
            "at site='resid_post'")
    if layers is None:
        chosen = [layer for layer in vector.layers if layer != 0]
        if len(chosen) < len(vector.layers):
            warnings.warn("layer 0 is left out: llama.cpp never steers block 0's output",
                          stacklevel=2)
    else:
        chosen = [int(layer) for layer in layers]
    if 0 in chosen:
        raise ControlVectorError(
            "layer 0 cannot be exported: llama.cpp has no control vector for block 0's "
            "output (its loader rejects direction.0); choose layers >= 1")
    if not chosen:
        raise ControlVectorError(f"no layer to export from layers {list(vector.layers)}; "
                                 "pass layers=[...] with layers >= 1")
    picked = vector.select(chosen)
    if coefficient != 1.0:
        picked = picked.scaled(coefficient)
    rows = picked.directions.detach().to("cpu", torch.float32)
    if not torch.isfinite(rows).all():
        raise ControlVectorError("the vector (times the coefficient) is not finite at layers "
                                 f"{chosen}; check the vector and coefficient")
    meta = picked.meta.then(f"export_control_vector({model_hint})")

    def write(scratch: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(scratch), ARCHITECTURE)
        writer.add_string(_HINT_KEY, model_hint)
        writer.add_uint32(_COUNT_KEY, len(chosen))
        writer.add_string(_META_KEY, json.dumps(meta.to_dict()))
        for layer, row in zip(chosen, rows, strict=True):
            writer.add_tensor(f"{_PREFIX}{layer}", row.numpy().copy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


def import_control_vector(
    path: str | os.PathLike[str],
    *,
    site: str = "resid_post",
    layers: Sequence[int] | None = None,
    model: Any | None = None,
) -> SteeringVector:
    """Read a llama.cpp control-vector GGUF (from actsteer, repeng or llama.cpp's
    ``cvector-generator``) as a float32 :class:`SteeringVector`.

    Args:
        path: the ``.gguf`` file.
        site: ``"resid_post"`` (``direction.N`` becomes layer ``N``, where llama.cpp adds
            it) or ``"resid_pre"`` (the same place seen as the next block's input: layer
            ``N + 1``). Other sites are refused; llama.cpp adds nothing there.
        layers: keep only these layers (numbered at ``site``); default all.
        model: if given, check that width and layers fit it.

    Raises:
        ControlVectorError: not a GGUF file, not a control vector, or a direction tensor
            llama.cpp itself would reject (bad name, layer 0, not 1-D float32, widths differ).
    """
    source = Path(path)
    if site not in ("resid_post", "resid_pre"):
        raise ControlVectorError(
            f"site {site!r}: llama.cpp adds control vectors to block outputs, which actsteer "
            "calls 'resid_post' (or 'resid_pre' of the next block); use one of those")
    if not source.is_file():
        raise MissingFileError(f"no control vector file at {source}")
    directions, hint, meta_text = _read(source)
    shift = 1 if site == "resid_pre" else 0
    found = sorted(directions)
    meta = (VectorMeta.from_dict(_json_object(meta_text, source),
                                 source=f"{source} ({_META_KEY})")
            if meta_text is not None
            else VectorMeta(model=hint, method="control_vector", dataset=source.stem))
    vector = SteeringVector(
        torch.stack([directions[n] for n in found]), tuple(n + shift for n in found), site,
        meta.then(f"import_control_vector({source.name}, site={site})"))
    if layers is not None:
        vector = vector.select(list(layers))
    if model is not None:
        vector.check_fits(model)
    return vector


def _read(source: Path) -> tuple[dict[int, torch.Tensor], str, str | None]:
    """``{N: direction.N}``, the model hint and the actsteer metadata text (if any)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as error:  # the gguf reader raises several kinds on non-GGUF input
        raise ControlVectorError(
            f"{source} is not a GGUF file ({type(error).__name__}: {error}); write one with "
            "export_control_vector") from None
    architecture = _string(reader, "general.architecture")
    if architecture != ARCHITECTURE:
        raise ControlVectorError(
            f"{source} is a GGUF file of architecture {architecture!r}, not a control vector "
            f"({ARCHITECTURE!r}); a model file goes to llama.cpp's -m, a control vector to "
            "--control-vector")
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = str(tensor.name)
        suffix = name[len(_PREFIX):] if name.startswith(_PREFIX) else ""
        if not suffix.isdigit():
            raise ControlVectorError(f"{source}: tensor {name!r} is not named direction.N; "
                                     "llama.cpp would reject this file")
        layer = int(suffix)
        if layer == 0:
            raise ControlVectorError(f"{source}: direction.0 is invalid (llama.cpp has no "
                                     "control vector for block 0's output)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise ControlVectorError(
                f"{source}: {name} is {tensor.tensor_type.name} of shape "
                f"{[int(n) for n in tensor.shape]}; llama.cpp needs 1-D F32 directions")
        directions[layer] = torch.from_numpy(np.array(tensor.data, dtype=np.float32))
    if not directions:
        raise ControlVectorError(f"{source} holds no direction tensors")
    widths = {int(row.shape[0]) for row in directions.values()}
    if len(widths) != 1:
        raise ControlVectorError(f"{source}: directions have different widths {sorted(widths)}")
    hint = _string(reader, _HINT_KEY) or "unknown"
    return directions, hint, _string(reader, _META_KEY)


def _string(reader: Any, key: str) -> str | None:
    """A string metadata value, or None if absent or not a string."""
    import gguf

    field = reader.get_field(key)
    if field is None or not field.types or field.types[0] != gguf.GGUFValueType.STRING:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _json_object(text: str, source: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ControlVectorError(f"{source}: {_META_KEY} is not valid JSON ({error}); export "
                                 "the vector again") from None
    if not isinstance(value, dict):
        raise ControlVectorError(f"{source}: {_META_KEY} is not a JSON object; export the "
                                 "vector again")
    return value
