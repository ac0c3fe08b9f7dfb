"""Progress bars that count items (prompts, documents, pairs), not batches.

A bar over batches sits at ``0/1`` for minutes on a slow machine; one over items moves as
each batch finishes and says how much work there is. Quiet unless asked (``progress=True``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

__all__ = ["by_items"]

G = TypeVar("G", bound=Sequence[int])


def by_items(groups: Sequence[G], *, desc: str, progress: bool, unit: str = "item"
             ) -> Iterator[G]:
    """Yield each group of item indices, advancing one bar by the group's size once the
    caller is done with it (so the bar counts finished items)."""
    total = sum(len(group) for group in groups)
    with tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        for group in groups:
            yield group
            bar.update(len(group))
