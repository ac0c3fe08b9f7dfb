"""Tensors of a safetensors checkpoint (one file or an indexed set of shards), read on demand.

Reads with ``readinto`` into fresh tensors rather than through a memory map: the bytes read
are the only memory used, and nothing stays resident once a tensor is freed (pages of a
mapped file count in a process's resident set while mapped). A block of rows can be read
alone, so a large embedding never has to be in memory whole.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from actsteer.errors import InvalidValueError

__all__ = ["Checkpoint", "has_safetensors"]

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def has_safetensors(folder: Path) -> bool:
    """Whether ``folder`` holds ``model.safetensors`` or a sharded index of them."""
    return (folder / "model.safetensors").exists() or (
        folder / "model.safetensors.index.json"
    ).exists()


class Checkpoint:
    """The tensors of ``folder``'s safetensors files, by name; headers are read up front."""

    def __init__(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").exists():
            files = ["model.safetensors"]
        else:
            raise InvalidValueError(f"{folder} has no model.safetensors(.index.json)")
        self._where: dict[str, tuple[Path, dict[str, Any], int]] = {}
        for name in files:
            path = folder / name
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            for key, entry in header.items():
                self._where[key] = (path, entry, 8 + length)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> Iterator[str]:
        return iter(self._where)

    def shape(self, name: str) -> list[int]:
        return [int(s) for s in self._entry(name)[1]["shape"]]

    def _entry(self, name: str) -> tuple[Path, dict[str, Any], int]:
        try:
            return self._where[name]
        except KeyError:
            raise InvalidValueError(f"tensor {name!r} is not in the checkpoint") from None

    def get(self, name: str, dtype: torch.dtype, rows: slice | None = None) -> torch.Tensor:
        """Tensor ``name`` (or its ``rows`` of dim 0) cast to ``dtype`` (the cast HF's
        loader makes)."""
        path, entry, base = self._entry(name)
        file_dtype = _ST_DTYPES.get(str(entry["dtype"]))
        if file_dtype is None:
            raise InvalidValueError(f"tensor {name!r} has unsupported dtype {entry['dtype']}")
        start, end = (int(x) for x in entry["data_offsets"])
        shape = self.shape(name)
        if rows is not None:
            row_bytes = (end - start) // max(1, shape[0])
            start, end = start + rows.start * row_bytes, start + rows.stop * row_bytes
            shape[0] = rows.stop - rows.start
        raw = torch.empty(end - start, dtype=torch.uint8)
        with path.open("rb") as handle:
            handle.seek(base + start)
            if handle.readinto(raw.numpy().data) != end - start:
                raise InvalidValueError(f"{path} is truncated (tensor {name!r})")
        tensor = raw.view(file_dtype).reshape(shape)
        return tensor if file_dtype == dtype else tensor.to(dtype)
