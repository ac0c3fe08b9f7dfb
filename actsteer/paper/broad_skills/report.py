"""Reading a broad-skills results file: the summary table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.errors import InvalidValueError
from actsteer.paper.broad_skills.config import EVAL_SETS
from actsteer.paper.broad_skills.keys import BaselineKey
from actsteer.results import read_results


def _pct(est: Mapping[str, Any] | None) -> str:
    if est is None:
        return "-"
    if est["low"] is None or est["high"] is None or not math.isfinite(est["low"]):
        return f"{100 * est['value']:.1f}%"
    return f"{100 * est['value']:.1f}% [{100 * est['low']:.0f},{100 * est['high']:.0f}]"


def summary_table(results: Mapping[str, Any]) -> str:
    """Baselines, then per layer × vector: the half-skill coefficient, relative text top-1
    there (95% bootstrap interval over documents) and the other code set there."""
    base = results["cells"].get(str(BaselineKey()))
    if base is None:
        return "no baseline scored yet"
    lines = ["unsteered next-token accuracy (top-1 / top-k, validation documents):"]
    for name in EVAL_SETS:
        cell = base[name]
        lines.append(f"  {name:<7} top-1 {cell['top1']['value']:.3f}  top-k "
                     f"{cell['topk']['value']:.3f}  ({cell['n_docs']} docs, "
                     f"{cell['n_tokens']} tokens)")
    lines.append("")
    lines.append("at the coefficient where the skill's top-1 is halved (interpolated):")
    header = (f"{'layer':>5} {'vector':<17} {'skill':<6} {'coef':>13} "
              f"{'text rel top-1':>20} {'other code rel':>20} {'max coef':>8}")
    lines += [header, "-" * len(header)]
    for entry in results["headline"].values():
        vector, layer = entry["vector"], entry["layer"]
        found = entry["text"]
        other = entry["other"]
        coef = "never halved" if found is None else (
            f"{found['coefficient']['value']:.2f}")
        lines.append(
            f"{layer:>5} {vector:<17} {entry['skill']:<6} {coef:>13} "
            f"{_pct(None if found is None else found['text_rel']):>20} "
            f"{_pct(None if other is None else other['text_rel']):>20} "
            f"{max(entry['coefficients']):>8g}")
    lines.append("(other code = the Python set for general vectors, non-Python code for "
                 "Python vectors)")
    return "\n".join(lines)


def load_partial(path: str | Path) -> dict[str, Any]:
    """An unfinished broad-skills results file: its cells so far, the layers it swept and
    the headline rows it finished (none before the last step), marked ``partial``."""
    from actsteer.paper.broad_skills.keys import SweepKey
    from actsteer.paper.keys import try_parse

    found = read_results(path)
    if "coefficients" not in found["config"]:
        raise InvalidValueError(f"{path} is not a broad-skills results file (its config has "
                                "no coefficients); plot the file that run wrote")
    swept = sorted({key.layer for text in found["cells"]
                    if isinstance(key := try_parse(text), SweepKey)})
    found.setdefault("layers", swept)
    found.setdefault("headline", {})
    found["partial"] = True
    return found


def load_results(path: str | Path) -> dict[str, Any]:
    """A finished ``broad_skills.jsonl`` in the shape :func:`run` returns (for
    :func:`summary_table` and :func:`write_figures`)."""
    return read_results(path, needs=("layers", "headline"))
