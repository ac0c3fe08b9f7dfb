"""The asked model's depth, read from its ``config.json`` without loading weights, and the
check of an experiment's layers against it: ``--layers 99`` is refused in a second, not
after the model has loaded."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from actsteer.cli.errors import CliError
from actsteer.cli.parser import SHORTCUTS

__all__ = ["check_config_layers", "model_depth"]

_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
"""Where Hugging Face configs of the architectures TransformerLens loads keep the depth."""


def _depth_in(config: Mapping[str, Any]) -> int | None:
    for key in _DEPTH_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    text = config.get("text_config")
    return _depth_in(text) if isinstance(text, Mapping) else None


def model_depth(name: str) -> int | None:
    """Layers of the model ``name`` (as :func:`actsteer.load_model` takes it), read from its
    ``config.json``: the embedded model's pinned depth, a local folder's config, or a Hub
    model's config in the local Hugging Face cache. ``None`` when no config is on this
    machine yet (the layers are then checked once the model has loaded)."""
    # imported here: `import actsteer.cli` (and so `actsteer --help`) must not load torch
    from actsteer.hub import cached_file
    from actsteer.models.embedded import EMBEDDED_MODEL, EMBEDDED_N_LAYERS
    from actsteer.models.loading import LLAMA2_MODELS

    if name == EMBEDDED_MODEL:
        return EMBEDDED_N_LAYERS
    folder = Path(name).expanduser()
    if folder.is_dir():
        path: Path | None = folder / "config.json"
    elif name in LLAMA2_MODELS:
        path = cached_file(name, "config.json")
    else:
        return None
    if path is None or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the loader reports an unreadable config in its own words
    return _depth_in(config) if isinstance(config, Mapping) else None


def _layers_of(value: Any) -> Iterator[int]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _layers_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _layers_of(item)


def check_config_layers(name: str, config: Any, args: argparse.Namespace) -> None:
    """Raise :class:`CliError` for the first layer in ``config`` (fields ``layers``,
    ``*_layer``, ``*_layers``) outside the model's, naming the flag that set it."""
    depth = model_depth(config.model.name)
    if depth is None:
        return
    flags: dict[str, str] = {}
    for flag, names, _ in SHORTCUTS.get(name, ()):
        if getattr(args, flag.lstrip("-").replace("-", "_"), None) is not None:
            flags.update(dict.fromkeys(names.split("|"), flag))
    for field in fields(config):
        if field.name.startswith("n_") or not (
                field.name == "layers" or field.name.endswith(("_layer", "_layers"))):
            continue
        for layer in _layers_of(getattr(config, field.name)):
            if not 0 <= layer < depth:
                given = flags.get(field.name, field.name)
                raise CliError(f"{given} {layer} is outside the model's {depth} layers "
                               f"({config.model.name}); use 0..{depth - 1}")
