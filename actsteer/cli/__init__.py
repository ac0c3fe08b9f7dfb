"""The ``actsteer`` command line.

    actsteer demo                                  # both quick experiments, embedded model
    actsteer multi-behaviour --profile quick --behaviours myopia sycophancy --set n_test=300
    actsteer multi-behaviour --profile paper --executor ray --ray-address auto  # a cluster
    actsteer broad-skills --layers 9 14 --config my_settings.json
    actsteer extract sycophancy --data-dir ../shared/data/behaviours --out syc.safetensors
    actsteer plot results/demo/multi_behaviour/multi_behaviour.jsonl
    actsteer harness --profile standard            # steering vs prompting, AxBench protocol

Every field of an experiment's config can be set: ``--set field=value`` (JSON values,
``model.dtype=bf16`` for the model), ``--config file.json`` (an object of fields), and
shortcuts such as ``--layers``.

Exit codes: 0 done; 2 a mistake in what was asked (bad arguments, missing data, an unusable
path, a results file in use), printed as one line on stderr before any data or model is
loaded where it can be known then; 130 interrupted (Ctrl-C), with one line; 1 a bug in
actsteer, with its traceback. ``--debug`` shows tracebacks for mistakes too.
"""


from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from actsteer.cli.commands import (
    check_device,
    check_free,
    check_output,
    cmd_demo,
    cmd_experiment,
    cmd_extract,
    cmd_plot,
    experiment_config,
    silence_progress,
)
from actsteer.cli.errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    RayUnavailableError,
    interrupted,
    is_mistake,
    one_line,
)
from actsteer.cli.executors import RAY_EXTRA, make_executor, ray_executor
from actsteer.cli.harness import cmd_harness
from actsteer.cli.parser import EXECUTORS, build_parser

__all__ = ["EXECUTORS", "EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_USAGE", "RAY_EXTRA", "CliError",
           "RayUnavailableError", "build_parser", "check_device", "check_free",
           "check_output", "cmd_demo", "cmd_experiment", "cmd_extract", "cmd_plot",
           "experiment_config", "main", "make_executor", "ray_executor"]

def _command(name: str) -> Callable[[argparse.Namespace], None]:
    # looked up at call time, so that a command replaced on this module is the one run
    fixed: dict[str, Callable[[argparse.Namespace], None]] = {
        "demo": cmd_demo, "extract": cmd_extract, "plot": cmd_plot, "harness": cmd_harness}
    if name in fixed:
        return fixed[name]
    return lambda args: cmd_experiment(name, args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("actsteer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:  # other libraries' INFO (torch's cache statistics at exit) is noise here
        logging.getLogger("torch").setLevel(logging.WARNING)
    if args.quiet:
        silence_progress()
    try:
        _command(args.command)(args)
    except KeyboardInterrupt:
        print(f"actsteer {args.command}: {interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if not is_mistake(error, args):
            traceback.print_exc()
            print(f"actsteer {args.command}: this is a bug in actsteer, not in what you asked; "
                  "please report it with the traceback above", file=sys.stderr)
            return EXIT_BUG
        if args.debug:
            traceback.print_exc()
        print(f"actsteer {args.command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    return 0
