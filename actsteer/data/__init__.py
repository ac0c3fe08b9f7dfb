"""Datasets: two-choice behaviour items and document corpora.

* :mod:`actsteer.data.behaviours`: behaviour datasets (the paper's files, Anthropic
  model-written-evals JSONL, built-ins, the Hub) and the paper's splits;
* :mod:`actsteer.data.corpora`: code and text corpora for the broad-skills experiment;
* ``builtin/``: small original files shipped with the package, read by
  :func:`read_builtin` (through :mod:`importlib.resources`, so they work from a wheel).

Reference data too large to ship (the paper's 1,000-item files, WikiText-2) is found by
:func:`actsteer.paths.data_dir`.
"""

from __future__ import annotations

from importlib import resources

from actsteer.errors import InvalidValueError

__all__ = ["BUILTIN_FILES", "read_builtin"]

BUILTIN_FILES: tuple[str, ...] = ("english_text.jsonl", "expressed.json", "harness.json",
                                  "laden_prompts.json", "myopia.jsonl", "wealth_seeking.jsonl")
"""The files in ``actsteer/data/builtin/``."""


def read_builtin(filename: str) -> str:
    """The text of one built-in file (``actsteer/data/builtin/<filename>``).

    Raises:
        ValueError: ``filename`` is not one of :data:`BUILTIN_FILES`.
    """
    if filename not in BUILTIN_FILES:
        raise InvalidValueError(
            f"no built-in data file {filename!r}; built-ins are {', '.join(BUILTIN_FILES)}"
            )
    resource = resources.files(__name__).joinpath("builtin", filename)
    return resource.read_text(encoding="utf-8")
