"""The commands: the checks every command makes before any work (output writable, device
present), an experiment's config from its profile and flags, and each command's body."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actsteer.cli.depth import check_config_layers
from actsteer.cli.errors import CliError
from actsteer.cli.executors import make_executor
from actsteer.cli.parser import MODEL_FLAGS, SHORTCUTS
from actsteer.errors import ActsteerError

if TYPE_CHECKING:
    from actsteer.executor import Executor

__all__ = ["check_device", "check_free", "check_output", "cmd_demo", "cmd_experiment",
           "cmd_extract", "cmd_plot", "experiment_config", "silence_progress"]


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


def _print_figures(figures: Sequence[Path]) -> None:
    if figures:
        print("figures:")
        for figure in figures:
            print(f"  {figure}")


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
    check_config_layers(name, config, args)  # from config.json: before any weights load
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
    from actsteer.harness.run import RESULTS_FILE as HARNESS_FILE
    from actsteer.results import check_unlocked

    check_unlocked(Path(args.out) / "harness" / HARNESS_FILE)
    started = time.perf_counter()
    figures: list[Path] = []
    record = demo_record(f"actsteer demo --out {args.out}")
    with contextlib.ExitStack() as stack:
        for executor in executors.values():
            if executor is not None:
                stack.enter_context(executor)
        for name, config in configs.items():
            print(f"== {name} (quick profile, embedded model) ==", flush=True)
            begun = time.perf_counter()
            table, written = _run(name, config, args, executors[config.model.spec()])
            record["experiments_s"][name] = round(time.perf_counter() - begun, 1)
            figures += written
            print(table, end="\n\n", flush=True)
        begun = time.perf_counter()
        figures += _demo_harness(Path(args.out) / "harness", not args.quiet)
        record["experiments_s"]["harness"] = round(time.perf_counter() - begun, 1)
    _print_figures(figures)
    wall = time.perf_counter() - started
    record.update(wall_time_s=round(wall, 1), load_average_end=list(os.getloadavg()))
    from actsteer.atomic import write_json_atomic

    write_json_atomic(Path(args.out) / DEMO_RECORD, record)
    print(f"results: {args.out}   wall time: {wall:.0f} s ({DEMO_RECORD})")


def _demo_harness(out: Path, progress: bool) -> list[Path]:
    """The harness's quick profile (``actsteer harness``), printed as a small table."""
    from actsteer.harness import profile, run, table, write_figures

    print("== harness (AxBench protocol, local scorers; quick profile, embedded model) ==",
          flush=True)
    results = run(profile("quick", out_dir=str(out)), progress=progress)
    print(table(results), end="\n\n", flush=True)
    return list(write_figures(results, out / "figures"))


DEMO_RECORD = "demo_run.json"
"""What ``actsteer demo`` writes beside its results: its wall time and the conditions."""


def demo_record(command: str) -> dict[str, Any]:
    """The start of :data:`DEMO_RECORD`: command, versions, cores and load."""
    import importlib.metadata
    import platform

    return {"command": command,
            "actsteer": importlib.metadata.version("actsteer"),
            "transformer_lens": importlib.metadata.version("transformer-lens"),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_start": list(os.getloadavg()), "experiments_s": {}}


def cmd_extract(args: argparse.Namespace) -> None:
    import actsteer
    from actsteer.data.behaviours import load_behaviour
    from actsteer.data.expressed import is_behaviour_file, load_expressed
    from actsteer.models import EMBEDDED_MODEL

    check_device(args.device)
    check_output(args.out, folder=False)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CliError(f"--data-dir {args.data_dir} does not exist; pass the folder holding "
                       "the paper's behaviour .json files")
    pairs: list[Any]
    strata: list[str] | None = None
    read: Any
    if is_behaviour_file(args.dataset):
        expressed = load_expressed(args.dataset)
        name, total = expressed.name, len(expressed)
        read = args.read or "answer_mean"
    else:
        dataset = load_behaviour(args.dataset, data_dir=args.data_dir)
        items = dataset.shuffled(13)
        name, total = dataset.name, len(items)
        read = args.read or "last"
    n = args.n if args.n is not None else min(500, total)
    if not 0 < n <= total:
        raise CliError(f"--n {args.n} is outside 1..{total} (items in {name})")
    model = actsteer.load_model(args.model or EMBEDDED_MODEL,
                                backend=args.backend, device=args.device,
                                dtype=args.dtype)
    if is_behaviour_file(args.dataset):
        pairs = expressed.pairs()[:n]
    else:
        pairs = items[:n].pairs(args.prompt_format, model.tokenizer)
        strata = [item.matching for item in items[:n]]
    vector = actsteer.caa_vector(model, pairs, strata=strata, site=args.site, read=read,
                                 method=args.method, dataset=name,
                                 batch_size=args.batch_size, progress=not args.quiet)
    path = vector.save(args.out)
    print(f"saved {path}: {len(vector.layers)} layers at {vector.site}, d_model "
          f"{vector.d_model}, {n} pairs of {name}")
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


def silence_progress() -> None:
    """Turn off tqdm bars: ours, and those of transformers / huggingface_hub loading."""
    os.environ["TQDM_DISABLE"] = "1"
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
