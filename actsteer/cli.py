"""The ``actsteer`` command line.

    actsteer demo                                  # both quick experiments, embedded model
    actsteer multi-behaviour --profile quick --behaviours myopia sycophancy --set n_test=300
    actsteer multi-behaviour --profile paper --executor ray --ray-address auto  # a cluster
    actsteer broad-skills --layers 9 14 --config my_settings.json
    actsteer extract sycophancy --data-dir ../shared/data/behaviours --out syc.safetensors
    actsteer plot results/demo/multi_behaviour/multi_behaviour.jsonl

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
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actsteer.errors import ActsteerError

if TYPE_CHECKING:
    from actsteer.executor import Executor, ModelSpec

logger = logging.getLogger("actsteer")

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class CliError(ActsteerError):
    """A user-facing error: printed as one line, exit code 2."""


class RayUnavailableError(ActsteerError, ImportError):
    """The Ray executor was asked for, and Ray is not installed."""


EXECUTORS: tuple[str, ...] = ("local", "ray")
"""The ``--executor`` choices: this process, or Ray workers (:func:`ray_executor`)."""

RAY_EXTRA = 'pip install "actsteer[ray]"'
"""How to install the optional Ray executor."""


SHORTCUTS: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    "multi-behaviour": (
        ("--behaviours", "behaviours", {"nargs": "+", "metavar": "NAME_OR_PATH",
                                        "help": "quick: sentiment, wedding, french, myopia; "
                                                "standard/paper: myopia, wealth_seeking, "
                                                "sycophancy, agreeableness, anti_immigration "
                                                "or .json/.jsonl files"}),
        ("--data-dir", "data_dir", {"type": Path, "help": "folder with the paper's behaviour "
                                                          "files (default: found, else "
                                                          "built-ins)"}),
        ("--layers", "grid_layers|candidate_layers",
         {"type": int, "nargs": "+", "help": "grid-search layers (A/B profiles); candidate "
                                             "layers of each behaviour (quick)"}),
        ("--coefficients", "grid_multipliers", {"type": float, "nargs": "+",
                                                "help": "grid multipliers"}),
    ),
    "broad-skills": (
        ("--layers", "layers", {"type": int, "nargs": "+", "help": "injection layers"}),
        ("--coefficients", "coefficients", {"type": float, "nargs": "+",
                                            "help": "coefficient schedule (starts at 0)"}),
        ("--text", "text_path", {"type": Path, "help": "text corpus file or folder (default: "
                                                       "WikiText-2 if found, else built-in)"}),
    ),
}
"""Per experiment: (flag, config field(s), argparse options) of its shortcut flags; with
several fields (``a|b``), the first one the profile's config has."""

MODEL_FLAGS = {"model": "model.name", "backend": "model.backend", "device": "model.device",
               "dtype": "model.dtype"}


def _flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Subcommands must not reset a flag given before the command name (argparse copies
    # subparser defaults over the namespace), so only the top level has a default.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks and debug logs")


def _executor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where units of scoring run: local (this process, default) or "
                             'ray (workers that each load the model; pip install "actsteer[ray]")')
    parser.add_argument("--workers", type=int, metavar="N",
                        help="ray: workers to start (default: one per GPU for a CUDA model, "
                             "else one per CPU)")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="ray: a running cluster to join ('auto': the one this machine "
                             "belongs to; default: start Ray on this machine)")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or local HF folder (default: the "
                                        "profile's; the embedded SmolLM2 for quick)")
    parser.add_argument("--backend", choices=("hooked", "bridge"),
                        help="HookedTransformer or TransformerBridge")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (checked before any work)")
    parser.add_argument("--dtype", choices=("float32", "bf16", "fp16"), help="weights dtype")


def build_parser() -> argparse.ArgumentParser:
    from actsteer.paper import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog="actsteer",
        description="Activation steering on TransformerLens, and the reproduction of "
                    "'Extending Activation Steering to Broad Skills and Multiple Behaviours'.")
    _flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run both quick experiments on the embedded model "
                                       "(offline) and print their tables")
    demo.add_argument("--out", type=Path, default=Path("results/demo"),
                      help="output folder (default: results/demo)")
    demo.add_argument("--overwrite", action="store_true",
                      help="start afresh instead of resuming results made with another config")
    _executor_flags(demo)
    _flags(demo)

    helps = {"multi-behaviour": "individual, combined and simultaneous steering of A/B "
                                "behaviours (paired effects, steerability)",
             "broad-skills": "suppress Python vs general coding ability"}
    for name in EXPERIMENTS:
        command = sub.add_parser(name, help=helps.get(name, name))
        command.add_argument("--profile", default="quick",
                             help="quick (embedded model, CPU), standard or paper (GPU); "
                                  "default quick")
        command.add_argument("--config", type=Path, metavar="FILE",
                             help="JSON object of config fields applied over the profile")
        command.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                             help="set one config field (JSON value), e.g. n_test=300, "
                                  "grid_layers=[10,14], model.dtype=bf16; repeatable")
        _model_flags(command)
        command.add_argument("--seed", type=int, help="random seed (default: the profile's)")
        command.add_argument("--out", type=Path, help="output folder for results, vectors "
                                                      "and figures (default: the profile's)")
        command.add_argument("--overwrite", action="store_true",
                             help="start the results file afresh if it was made with "
                                  "another config")
        for flag, _, options in SHORTCUTS.get(name, ()):
            command.add_argument(flag, **options)
        _executor_flags(command)
        _flags(command)

    extract = sub.add_parser("extract", help="build a CAA vector from an A/B dataset, "
                                             "print its diagnostics and save it")
    extract.add_argument("dataset", help="behaviour name, .json/.jsonl path or hub:<file>")
    extract.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    _model_flags(extract)
    extract.add_argument("--data-dir", type=Path, help="folder of the paper's behaviour files")
    extract.add_argument("--n", type=int, default=None,
                         help="items to use (default: the paper's vector split, 500)")
    extract.add_argument("--site", default="resid_post",
                         choices=("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"))
    extract.add_argument("--read", default="last",
                         choices=("last", "answer", "answer_mean", "mean"))
    extract.add_argument("--method", default="mean_diff", choices=("mean_diff", "pca", "probe"))
    extract.add_argument("--format", dest="prompt_format", default="paper",
                         choices=("paper", "chat"))
    extract.add_argument("--batch-size", type=int, default=16)
    _flags(extract)

    plot = sub.add_parser("plot", help="write the figures (and print the table) of a "
                                       "results file")
    plot.add_argument("results", type=Path,
                      help="multi_behaviour.jsonl or broad_skills.jsonl (or a .json one)")
    plot.add_argument("--out", type=Path, default=None,
                      help="figure folder (default: beside the results file)")
    _flags(plot)
    return parser


# --------------------------------------------------------------------------- checks


def check_output(path: Path, *, what: str = "--out", folder: bool = True) -> None:
    """Raise :class:`CliError` unless ``path`` can be written, found by trying: the folder
    (``path``, or a file's parent) is created and a scratch file written in it and
    removed. Runs before any work, so nothing is computed for nothing."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise CliError(f"{what} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise CliError(f"{what} {path} is a folder; give a file name")
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".actsteer-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CliError(f"{what} {path} cannot be written ({reason}: "
                       f"{error.filename or target}); choose a folder you can write to, "
                       "e.g. --out /tmp/actsteer") from None


def check_device(device: str | None) -> None:
    """Raise :class:`CliError` for a device this machine does not have."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or "
                       "mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine; "
                           "use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CliError(f"--device {device}: this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {device}: MPS is not available on this machine")


def experiment_config(name: str, args: argparse.Namespace) -> Any:
    """The profile, then ``--config``, then shortcut and model flags, then ``--set``."""
    from actsteer.paper import get_experiment
    from actsteer.paper.common import config_file_overrides, parse_set

    experiment = get_experiment(name)
    if args.profile not in experiment.profiles:
        raise CliError(f"--profile {args.profile!r} is not a profile of {name}; use one of "
                       f"{', '.join(experiment.profiles)}")
    fields = set(type(experiment.profile(args.profile)).field_names())
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides.update(config_file_overrides(args.config))
    for flag, names, _ in SHORTCUTS.get(name, ()):
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        field = next((f for f in names.split("|") if f in fields), None)
        if field is None:
            raise CliError(f"{flag} does not apply to --profile {args.profile} of {name}; "
                           f"set its fields with --set FIELD=VALUE ({', '.join(sorted(fields))})")
        overrides[field] = str(value) if isinstance(value, Path) else value
    for attr, field in MODEL_FLAGS.items():
        if getattr(args, attr, None) is not None:
            overrides[field] = getattr(args, attr)
    if args.seed is not None:
        overrides["seed"] = args.seed
    overrides.update(parse_set(args.set))
    if args.out is not None:
        overrides["out_dir"] = str(args.out)
    return experiment.profile(args.profile, **overrides)


# --------------------------------------------------------------------------- commands


def _print_figures(figures: Sequence[Path]) -> None:
    if figures:
        print("figures:")
        for figure in figures:
            print(f"  {figure}")


def make_executor(args: argparse.Namespace, config: Any) -> Executor | None:
    """The executor the flags ask for (None: local), checked before any work: asking
    for Ray without Ray installed ends here, with the extra to install."""
    if args.executor == "local":
        for flag, value in (("--workers", args.workers), ("--ray-address", args.ray_address)):
            if value is not None:
                raise CliError(f"{flag} applies to --executor ray only")
        return None
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers {args.workers} is invalid; use 1 or more")
    return ray_executor(config.model.spec(), workers=args.workers, address=args.ray_address)


def ray_executor(spec: ModelSpec, *, workers: int | None = None,
                 address: str | None = None) -> Executor:
    """A :class:`~actsteer.ray_executor.RayExecutor` loading ``spec`` on ``workers`` actors,
    on a Ray started here (``address`` None) or the cluster at ``address`` (``"auto"``: the
    one this machine belongs to). Ray is imported here, only when asked for.

    Raises:
        RayUnavailableError: Ray is not installed (``pip install "actsteer[ray]"``).
    """
    try:
        from actsteer.ray_executor import RayExecutor
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "ray":
            raise
        raise RayUnavailableError(f"--executor ray needs Ray, which is not installed: "
                                  f"{RAY_EXTRA}") from None
    return RayExecutor(spec, workers=workers, address=address)


def _run(name: str, config: Any, args: argparse.Namespace,
         executor: Executor | None) -> tuple[str, list[Path]]:
    from actsteer.paper import get_experiment

    experiment = get_experiment(name)
    results = experiment.run(config, progress=not args.quiet, overwrite=args.overwrite,
                             executor=executor)
    figures = experiment.write_figures(results, Path(config.out_dir) / "figures")
    return experiment.summary_table(results), figures


def check_free(name: str, out_dir: str | Path) -> None:
    """Stop now, not after loading data and a model, if another run writes this folder."""
    from actsteer.paper import get_experiment
    from actsteer.results import check_unlocked

    check_unlocked(Path(out_dir) / get_experiment(name).results_file)


def cmd_experiment(name: str, args: argparse.Namespace) -> None:
    config = experiment_config(name, args)
    check_device(config.model.device)
    executor = make_executor(args, config)  # builds nothing yet; refuses missing Ray
    check_output(Path(config.out_dir))
    check_free(name, config.out_dir)
    with contextlib.ExitStack() as stack:
        if executor is not None:
            stack.enter_context(executor)
        table, figures = _run(name, config, args, executor)
    print(table)
    _print_figures(figures)


def cmd_demo(args: argparse.Namespace) -> None:
    from actsteer.paper import EXPERIMENTS, get_experiment

    configs = {name: get_experiment(name).profile(
        "quick", out_dir=str(Path(args.out) / name.replace("-", "_"))) for name in EXPERIMENTS}
    executors: dict[Any, Executor | None] = {}  # one pool of workers per model (built lazily)
    for config in configs.values():
        if config.model.spec() not in executors:
            executors[config.model.spec()] = make_executor(args, config)
    check_output(Path(args.out))
    for name in EXPERIMENTS:
        check_free(name, Path(args.out) / name.replace("-", "_"))
    started = time.perf_counter()
    figures: list[Path] = []
    with contextlib.ExitStack() as stack:
        for executor in executors.values():
            if executor is not None:
                stack.enter_context(executor)
        for name, config in configs.items():
            print(f"== {name} (quick profile, embedded model) ==", flush=True)
            table, written = _run(name, config, args, executors[config.model.spec()])
            figures += written
            print(table, end="\n\n", flush=True)
    _print_figures(figures)
    print(f"results: {args.out}   wall time: {time.perf_counter() - started:.0f} s")


def cmd_extract(args: argparse.Namespace) -> None:
    import actsteer
    from actsteer.data.behaviours import load_behaviour
    from actsteer.models import EMBEDDED_MODEL

    check_device(args.device)
    check_output(args.out, folder=False)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CliError(f"--data-dir {args.data_dir} does not exist; pass the folder holding "
                       "the paper's behaviour .json files")
    dataset = load_behaviour(args.dataset, data_dir=args.data_dir)
    items = dataset.shuffled(13)
    n = args.n if args.n is not None else min(500, len(items))
    if not 0 < n <= len(items):
        raise CliError(f"--n {args.n} is outside 1..{len(items)} (items in {dataset.name})")
    model = actsteer.load_model(args.model or EMBEDDED_MODEL,
                                backend=args.backend or "hooked", device=args.device,
                                dtype=args.dtype)
    vector = actsteer.caa_vector(model, items[:n].pairs(args.prompt_format, model.tokenizer),
                                 strata=[item.matching for item in items[:n]],
                                 site=args.site, read=args.read, method=args.method,
                                 dataset=dataset.name, batch_size=args.batch_size,
                                 progress=not args.quiet)
    path = vector.save(args.out)
    print(f"saved {path}: {len(vector.layers)} layers at {vector.site}, d_model "
          f"{vector.d_model}, {n} pairs of {dataset.name}")
    from actsteer.diagnostics import diagnostics_table

    print(diagnostics_table(vector))


def cmd_plot(args: argparse.Namespace) -> None:
    from actsteer.paper import experiment_for

    if not args.results.is_file():
        raise CliError(f"no results file at {args.results}")
    out = args.out or args.results.parent / "figures"
    check_output(out)
    experiment = experiment_for(args.results.name)
    try:
        results = experiment.load_results(args.results)
    except ActsteerError as error:
        if "unfinished run" not in str(error):
            raise
        results = experiment.load_partial(args.results)
        print(f"PARTIAL RUN: {args.results} holds {len(results['cells'])} finished cells; "
              "this is what they show (run the command that made it again to finish it)\n")
    figures = experiment.write_figures(results, out)
    print(experiment.summary_table(results))
    _print_figures(figures)


def _silence_progress() -> None:
    """Turn off tqdm bars: ours, and those of transformers / huggingface_hub loading."""
    os.environ["TQDM_DISABLE"] = "1"
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _command(name: str) -> Callable[[argparse.Namespace], None]:
    fixed: dict[str, Callable[[argparse.Namespace], None]] = {
        "demo": cmd_demo, "extract": cmd_extract, "plot": cmd_plot}
    if name in fixed:
        return fixed[name]
    return lambda args: cmd_experiment(name, args)


INTERRUPTED = {
    "extract": "interrupted; nothing was saved",
    "plot": "interrupted; figures already written are complete, the rest were not written",
}
"""What Ctrl-C leaves behind, per command (experiments and the demo: finished cells)."""


def _interrupted(args: argparse.Namespace) -> str:
    if args.command in INTERRUPTED:
        return INTERRUPTED[args.command]
    return ("interrupted; every finished cell is saved, run the same command again to resume "
            "where it stopped")


def _user_paths(args: argparse.Namespace) -> list[Path]:
    """The paths given on the command line (an OSError on one of them is the user's)."""
    found = []
    for name in ("out", "results", "config", "data_dir", "text", "dataset"):
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and str(value):
            found.append(Path(value).expanduser().absolute())
    return found


def _is_mistake(error: BaseException, args: argparse.Namespace) -> bool:
    """An error that is the user's to fix (one line, exit 2), not a bug (traceback, exit 1)."""
    if isinstance(error, ActsteerError):
        return True
    if isinstance(error, OSError) and error.filename:
        where = Path(str(error.filename)).expanduser().absolute()
        return any(where == p or p in where.parents for p in _user_paths(args))
    return False


def _one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = str(message).splitlines()[0] if str(message) else type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text


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
        _silence_progress()
    try:
        _command(args.command)(args)
    except KeyboardInterrupt:
        print(f"actsteer {args.command}: {_interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if not _is_mistake(error, args):
            traceback.print_exc()
            print(f"actsteer {args.command}: this is a bug in actsteer, not in what you asked; "
                  "please report it with the traceback above", file=sys.stderr)
            return EXIT_BUG
        if args.debug:
            traceback.print_exc()
        print(f"actsteer {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
