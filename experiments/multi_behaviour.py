"""Entry point: the multi-behaviour reproduction (van der Weij, Poesio & Schoots 2024, §3-4).

The experiment lives in the package (:mod:`actsteer.paper.multi_behaviour`); this file is
the readable way in from a clone, and the same as ``actsteer multi-behaviour``::

    python -m experiments.multi_behaviour --profile quick --out /tmp/mb
    python -m experiments.multi_behaviour --profile standard --set n_test=300

From Python::

    from actsteer.paper import multi_behaviour as mb
    results = mb.run(mb.profile("quick", out_dir="/tmp/mb", n_test=40))
    print(mb.summary_table(results))
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from actsteer.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """``actsteer multi-behaviour`` with these arguments (default: the command line's)."""
    return cli_main(["multi-behaviour", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
