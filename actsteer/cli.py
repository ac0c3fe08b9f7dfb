"""The ``actsteer`` command line.

    actsteer demo                          # both quick experiments on the embedded model
    actsteer multi-behaviour --profile quick --behaviours myopia wealth_seeking
    actsteer broad-skills --profile quick --layers 9 14
    actsteer extract myopia --layer-range 0 30 --out myopia.safetensors
    actsteer plot results/multi_behaviour.json

Bad arguments or missing data end with one line on stderr and exit code 2 (``--debug``
shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("actsteer")

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=("quick", "paper"), default="quick",
                        help="quick: embedded model on CPU, minutes; paper: the paper's "
                             "model and sizes (GPU)")
    parser.add_argument("--model", help="model name or local HF folder (default: the profile's)")
    parser.add_argument("--backend", choices=("hooked", "bridge"),
                        help="HookedTransformer or TransformerBridge (default: hooked)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the profile's)")
    parser.add_argument("--dtype", choices=("float32", "bf16", "fp16"),
                        help="weights dtype (default: float32 on CPU)")
    parser.add_argument("--seed", type=int, help="random seed (default: the profile's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for results JSON, vectors and figures")


def _flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Subcommands must not reset a flag given before the command name (argparse copies
    # subparser defaults over the namespace), so only the top level has a default.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actsteer",
        description="Activation steering on TransformerLens, and the reproduction of "
                    "'Extending Activation Steering to Broad Skills and Multiple Behaviours'.")
    _flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run both quick experiments on the embedded model "
                                       "(offline) and print a results table")
    demo.add_argument("--out", type=Path, default=Path("results/demo"),
                      help="output folder (default: results/demo)")
    _flags(demo)

    multi = sub.add_parser("multi-behaviour", help="individual, combined and simultaneous "
                                                   "steering of A/B behaviours")
    _common(multi)
    multi.add_argument("--behaviours", nargs="+", metavar="NAME_OR_PATH",
                       help="behaviour names (myopia, wealth_seeking, sycophancy, "
                            "agreeableness, anti_immigration) or .json/.jsonl files")
    multi.add_argument("--data-dir", type=Path,
                       help="folder with the paper's behaviour files (default: built-ins, or "
                            "../shared/data/behaviours when present)")
    multi.add_argument("--layers", type=int, nargs="+", help="grid-search layers")
    multi.add_argument("--coefficients", type=float, nargs="+", help="grid multipliers")
    _flags(multi)

    skills = sub.add_parser("broad-skills", help="suppress Python vs general coding ability")
    _common(skills)
    skills.add_argument("--layers", type=int, nargs="+", help="injection layers")
    skills.add_argument("--coefficients", type=float, nargs="+", help="coefficient schedule")
    skills.add_argument("--text", type=Path, help="text corpus file or folder "
                                                  "(default: WikiText-2 if found, else built-in)")
    _flags(skills)

    extract = sub.add_parser("extract", help="build a CAA vector from an A/B dataset and save it")
    extract.add_argument("dataset", help="behaviour name or .json/.jsonl path")
    extract.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    extract.add_argument("--model", default=None, help="model (default: embedded)")
    extract.add_argument("--backend", choices=("hooked", "bridge"), default="hooked")
    extract.add_argument("--device", default=None)
    extract.add_argument("--dtype", choices=("float32", "bf16", "fp16"), default=None)
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

    plot = sub.add_parser("plot", help="write the figures for a results JSON file")
    plot.add_argument("results", type=Path, help="multi_behaviour.json or broad_skills.json")
    plot.add_argument("--out", type=Path, default=None,
                      help="figure folder (default: beside the results file)")
    _flags(plot)
    return parser


def _overrides(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """CLI attributes that were given, renamed to config fields."""
    chosen: dict[str, Any] = {}
    for attr, field in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            chosen[field] = tuple(value) if isinstance(value, list) else value
    return chosen


def _run_experiment(module: Any, args: argparse.Namespace, mapping: dict[str, str],
                    default_out: str) -> list[Path]:
    """Profile + CLI overrides → run → figures and the summary table; the figure paths."""
    overrides = _overrides(args, mapping)
    overrides["out_dir"] = str(args.out or Path("results") / default_out)
    config = module.profile(args.profile, **overrides)
    results = module.run(config, progress=not args.quiet)
    figures = module.write_figures(results, Path(overrides["out_dir"]) / "figures")
    print(module.summary_table(results))
    return figures


_SHARED = {"model": "model", "backend": "backend", "device": "device", "dtype": "dtype",
           "seed": "seed"}


def cmd_multi_behaviour(args: argparse.Namespace) -> None:
    from experiments import multi_behaviour

    mapping = {**_SHARED, "behaviours": "behaviours", "data_dir": "data_dir",
               "layers": "grid_layers", "coefficients": "grid_multipliers"}
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CliError(f"--data-dir {args.data_dir} does not exist; pass the folder holding "
                       "the paper's behaviour .json files")
    _print_figures(_run_experiment(multi_behaviour, args, mapping, "multi_behaviour"))


def cmd_broad_skills(args: argparse.Namespace) -> None:
    from experiments import broad_skills

    mapping = {**_SHARED, "layers": "layers", "coefficients": "coefficients",
               "text": "text_path"}
    if args.text is not None and not Path(args.text).exists():
        raise CliError(f"--text {args.text} does not exist; pass a .txt file or a folder")
    _print_figures(_run_experiment(broad_skills, args, mapping, "broad_skills"))


def _print_figures(figures: Sequence[Path]) -> None:
    if figures:
        print("figures:")
        for figure in figures:
            print(f"  {figure}")


def cmd_demo(args: argparse.Namespace) -> None:
    from experiments import broad_skills, multi_behaviour

    started = time.perf_counter()
    figures: list[Path] = []
    tables = []
    for module, name in ((multi_behaviour, "multi_behaviour"), (broad_skills, "broad_skills")):
        out = Path(args.out) / name
        config = module.profile("quick", out_dir=str(out))
        print(f"== {name.replace('_', '-')} (quick profile, embedded model) ==", flush=True)
        results = module.run(config, progress=not args.quiet)
        figures += module.write_figures(results, out / "figures")
        tables.append(module.summary_table(results))
    print()
    for table in tables:
        print(table)
        print()
    _print_figures(figures)
    print(f"results: {args.out}   wall time: {time.perf_counter() - started:.0f} s")


def cmd_extract(args: argparse.Namespace) -> None:
    import actsteer
    from actsteer.behaviours import load_behaviour
    from actsteer.prompts import format_item

    dataset = load_behaviour(args.dataset, data_dir=args.data_dir)
    items = list(dataset.shuffled(13))
    n = args.n if args.n is not None else min(500, len(items))
    if not 0 < n <= len(items):
        raise CliError(f"--n {args.n} is outside 1..{len(items)} (items in {dataset.name})")
    model = actsteer.load_model(args.model or actsteer.EMBEDDED_MODEL, backend=args.backend,
                                device=args.device, dtype=args.dtype)
    pairs = [actsteer.ContrastivePair(
        format_item(item.question, item.kind, args.prompt_format, model.tokenizer),
        item.matching, item.not_matching) for item in items[:n]]
    vector = actsteer.caa_vector(model, pairs, site=args.site, read=args.read,
                                 method=args.method, dataset=dataset.name,
                                 batch_size=args.batch_size, progress=not args.quiet)
    path = vector.save(args.out)
    norms = vector.norms()
    print(f"saved {path}: {len(vector.layers)} layers, d_model {vector.d_model}, "
          f"{n} pairs, norm at layer {len(norms) // 2} = {norms[len(norms) // 2]:.2f}")


def cmd_plot(args: argparse.Namespace) -> None:
    name = args.results.name
    if name.startswith("multi_behaviour"):
        from experiments import multi_behaviour as module
    elif name.startswith("broad_skills"):
        from experiments import broad_skills as module  # type: ignore[no-redef]
    elif not args.results.is_file():
        raise CliError(f"no results file at {args.results}")
    else:
        raise CliError(f"cannot tell which experiment made {args.results.name}; expected "
                       "multi_behaviour.json or broad_skills.json")
    results = module.load_results(args.results)
    figures = module.write_figures(results, args.out or args.results.parent / "figures")
    print(module.summary_table(results))
    _print_figures(figures)


def _silence_progress() -> None:
    """Turn off tqdm bars: ours, and those of transformers / huggingface_hub loading."""
    os.environ["TQDM_DISABLE"] = "1"
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "demo": cmd_demo,
    "multi-behaviour": cmd_multi_behaviour,
    "broad-skills": cmd_broad_skills,
    "extract": cmd_extract,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        _silence_progress()
    from actsteer.models import ModelUnavailableError

    expected = (CliError, FileNotFoundError, ValueError, KeyError, ModelUnavailableError)
    try:
        COMMANDS[args.command](args)
    except expected as error:
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"actsteer {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished cells are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
