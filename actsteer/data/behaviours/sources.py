"""Where behaviour datasets come from: built-ins, the paper's files, any file, the Hub.

:func:`load_behaviour` turns one spec (``"builtin:<name>"``, a paper behaviour's name, a
path or ``"hub:<file>"``) into a :class:`BehaviourDataset`; the other loaders here are the
sources it dispatches to. Distinct data has distinct names: ``"myopia"`` is always the
paper's file, ``"builtin:myopia"`` the items shipped with actsteer.
The paper's files are found with :func:`actsteer.paths.data_dir` (``$ACTSTEER_DATA_DIR``
or ``shared/data`` beside the repository), Hub files through :mod:`actsteer.hub`.
"""

from __future__ import annotations

import os
from pathlib import Path

from actsteer.data import read_builtin
from actsteer.data.behaviours.formats import (
    OnError,
    build_dataset,
    jsonl_rows,
    load_file,
    load_paper_json,
    read_text,
)
from actsteer.data.behaviours.items import BehaviourDataset
from actsteer.errors import InvalidValueError, MissingFileError
from actsteer.hub import HubUnavailableError, fetch_file
from actsteer.paths import DATA_DIR_ENV, data_dir

__all__ = [
    "BUILTIN_BEHAVIOURS",
    "BUILTIN_PREFIX",
    "HUB_REPO",
    "PAPER_BEHAVIOURS",
    "PAPER_FILES",
    "DatasetUnavailableError",
    "canonical_name",
    "default_data_dir",
    "load_behaviour",
    "load_builtin",
    "load_from_hub",
]

PAPER_BEHAVIOURS: tuple[str, ...] = (
    "myopia",
    "wealth_seeking",
    "sycophancy",
    "agreeableness",
    "anti_immigration",
)
"""The paper's five behaviours, in the paper's order."""

PAPER_FILES: dict[str, str] = {
    "myopia": "myopic.json",
    "wealth_seeking": "wealth_seeking.json",
    "sycophancy": "sycophancy.json",
    "agreeableness": "agreeableness.json",
    "anti_immigration": "anti_immigration.json",
}
"""File name of each paper behaviour inside the behaviour data folder."""

BUILTIN_BEHAVIOURS: tuple[str, ...] = ("myopia", "wealth_seeking")
"""Behaviours shipped with the package (original items, ``actsteer/data/builtin/``),
loaded as ``"builtin:<name>"``."""

BUILTIN_PREFIX = "builtin:"
"""``load_behaviour("builtin:myopia")`` loads a built-in set (see :func:`load_builtin`)."""

HUB_REPO = "Anthropic/model-written-evals"
"""The Hub dataset that ``"hub:<file>"`` specs read from."""

DATA_SUBDIR = "behaviours"
"""The paper's behaviour files live in ``data_dir("behaviours")``."""

_ALIASES = {"myopic": "myopia", "myopic_reward": "myopia", "wealth": "wealth_seeking"}
_HUB_PREFIX = "hub:"


class DatasetUnavailableError(HubUnavailableError):
    """A dataset could not be fetched (e.g. the Hugging Face Hub is unreachable)."""


def canonical_name(name: str) -> str:
    """A behaviour name normalised: lower case, ``_`` for spaces and dashes, aliases
    (``"myopic"``, ``"wealth"``, ...) resolved to the paper's names.

    Example:
        >>> canonical_name("Wealth-Seeking"), canonical_name("myopic")
        ('wealth_seeking', 'myopia')
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def default_data_dir() -> Path | None:
    """The folder holding the paper's behaviour files, or ``None`` if none is found:
    ``actsteer.paths.data_dir("behaviours")`` (see there for the one search rule)."""
    return data_dir(DATA_SUBDIR)


def load_builtin(name: str) -> BehaviourDataset:
    """Load a dataset shipped with the package: ``"myopia"`` or ``"wealth_seeking"`` (with
    or without the ``"builtin:"`` prefix that :func:`load_behaviour` needs).

    These are small original item sets (72 A/B items each, balanced) for tests and
    quick runs; they are not the paper's data.

    Example:
        >>> load_builtin("wealth_seeking").balance_report()
        {'A': 36, 'B': 36}
    """
    key = canonical_name(name.removeprefix(BUILTIN_PREFIX))
    if key not in BUILTIN_BEHAVIOURS:
        raise InvalidValueError(
            f"no built-in behaviour {name!r}; built-ins are {', '.join(BUILTIN_BEHAVIOURS)}"
            )
    filename = f"{key}.jsonl"
    return build_dataset(
        jsonl_rows(read_builtin(filename)),
        name=key,
        source=f"builtin:{key}",
        where=f"builtin {filename}",
        on_error="raise",
    )


def load_from_hub(
    relpath: str, *, on_error: OnError = "raise", timeout: float = 5.0
) -> BehaviourDataset:
    """Download one file of ``Anthropic/model-written-evals`` and load it as JSONL.

    ``relpath`` is the file's path in that dataset repository, e.g.
    ``"advanced-ai-risk/lm_generated_evals/myopic-reward.jsonl"``. The file is fetched by
    :func:`actsteer.hub.fetch_file` (cached like every Hub download; with
    ``HF_HUB_OFFLINE=1`` only the local cache is used) and parsed like
    :func:`~actsteer.data.behaviours.load_anthropic_jsonl`, so errors name the line.

    Raises:
        DatasetUnavailableError: offline without a cached copy, or the Hub did not answer
            within ``timeout`` seconds, or the download failed.
        ValueError: ``relpath`` does not name a ``.jsonl`` file.
    """
    relpath = relpath.strip().lstrip("/")
    if not relpath.endswith(".jsonl"):
        raise InvalidValueError(
                                f"hub path {relpath!r} must name a .jsonl file of {HUB_REPO}, e.g. "
                                "'advanced-ai-risk/lm_generated_evals/myopic-reward.jsonl'"
                                )
    local = fetch_file(
        HUB_REPO,
        relpath,
        repo_type="dataset",
        instead=f"download {relpath} and pass its local path instead",
        timeout=timeout,
        error=DatasetUnavailableError,
    )
    return build_dataset(
        jsonl_rows(read_text(local, where=f"hub:{relpath}")),
        name=Path(relpath).stem,
        source=f"hub:{relpath}",
        where=f"hub:{relpath}",
        on_error=on_error,
    )


def _valid_specs() -> str:
    builtins = ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_BEHAVIOURS)
    return (
        f"built-ins {builtins}; paper behaviours {', '.join(PAPER_BEHAVIOURS)} (their files "
        f"in data_dir=... or the data folder); a .json/.jsonl path; "
        f"or 'hub:<file in {HUB_REPO}>'"
    )


def _instead(key: str) -> str:
    """The built-in set to suggest when the paper's file for ``key`` is missing."""
    return (f", or use {BUILTIN_PREFIX + key!r} for actsteer's built-in items"
            if key in BUILTIN_BEHAVIOURS else "")


def _load_path(path: Path, on_error: OnError) -> BehaviourDataset:
    if not path.exists():
        raise MissingFileError(
            f"behaviour file not found: {path}; pass an existing .json/.jsonl file, "
            f"or one of: {_valid_specs()}"
            )
    return load_file(path, on_error=on_error)


def load_behaviour(
    spec: str | Path, *, data_dir: str | Path | None = None, on_error: OnError = "raise"
) -> BehaviourDataset:
    """Load a behaviour dataset from a path, a name or a Hub file.

    Dispatch on ``spec``:

    * ``"builtin:<name>"``: a set shipped with actsteer (:data:`BUILTIN_BEHAVIOURS`, see
      :func:`load_builtin`); ``data_dir`` does not apply;
    * a path ending ``.json``: paper format when the items carry the ``Human:`` wrapper,
      otherwise a JSON list in the Anthropic schema; ``.jsonl``: Anthropic JSONL;
    * ``"hub:<relpath>"``: :func:`load_from_hub`;
    * a paper behaviour name (:data:`PAPER_BEHAVIOURS`): always the paper's file
      (:data:`PAPER_FILES`), in ``data_dir`` or else :func:`default_data_dir`; a missing
      file raises :class:`~actsteer.errors.MissingFileError` naming where it looked.

    Example:
        >>> load_behaviour("builtin:wealth_seeking").source
        'builtin:wealth_seeking'
        >>> load_behaviour("sycophancy", data_dir="../shared/data/behaviours")
        ... # doctest: +SKIP
    """
    if isinstance(spec, str) and spec.startswith(_HUB_PREFIX):
        return load_from_hub(spec[len(_HUB_PREFIX) :], on_error=on_error)
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        if data_dir is not None:
            raise InvalidValueError(
                f"{spec!r} is a built-in set, so data_dir does not apply; drop data_dir, or "
                f"name a paper behaviour ({', '.join(PAPER_BEHAVIOURS)}) to read its file")
        return load_builtin(spec)
    if isinstance(spec, Path) or spec.endswith((".json", ".jsonl")):
        return _load_path(Path(spec), on_error)
    key = canonical_name(spec)
    if key not in PAPER_FILES:
        if Path(spec).exists():
            return _load_path(Path(spec), on_error)
        raise InvalidValueError(f"unknown behaviour {spec!r}; valid: {_valid_specs()}")
    filename = PAPER_FILES[key]
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if folder is None:
        env = os.environ.get(DATA_DIR_ENV)
        looked = (f"${DATA_DIR_ENV}/{DATA_SUBDIR} ({env}/{DATA_SUBDIR})" if env else
                  f"shared/data/{DATA_SUBDIR} in {Path.cwd()}, its parents and beside the "
                  "actsteer package")
        raise MissingFileError(
            f"paper behaviour {key!r} reads {filename}, but no data folder was found (looked "
            f"for {looked}); pass data_dir=<folder with {filename}>, set {DATA_DIR_ENV}"
            f"{_instead(key)}")
    path = folder / filename
    if not path.is_file():
        raise MissingFileError(
            f"paper behaviour file not found: {path}; pass data_dir=<folder with "
            f"{filename}>{_instead(key)}")
    return load_paper_json(path, name=key, on_error=on_error)
