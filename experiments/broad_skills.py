"""Entry point: the broad-skills reproduction (van der Weij, Poesio & Schoots 2024, §2).

The experiment lives in the package (:mod:`actsteer.paper.broad_skills`); this file is the
readable way in from a clone, and the same as ``actsteer broad-skills``::

    python -m experiments.broad_skills --profile quick --out /tmp/bs
    python -m experiments.broad_skills --layers 9 14 --set n_valid=48

From Python::

    from actsteer.paper import broad_skills as bs
    results = bs.run(bs.profile("quick", out_dir="/tmp/bs"))
    print(bs.summary_table(results))
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from actsteer.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """``actsteer broad-skills`` with these arguments (default: the command line's)."""
    return cli_main(["broad-skills", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
