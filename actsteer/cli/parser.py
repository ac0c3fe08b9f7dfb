"""The ``actsteer`` argument parser: commands, their flags, and the shortcut flags that
set config fields. Builds without importing torch (``actsteer --help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from actsteer._version import __version__

__all__ = ["EXECUTORS", "MODEL_FLAGS", "SHORTCUTS", "build_parser"]

EXECUTORS: tuple[str, ...] = ("local", "ray")
"""The ``--executor`` choices: this process, or Ray workers
(:func:`actsteer.cli.executors.ray_executor`)."""

SHORTCUTS: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    "multi-behaviour": (
        ("--behaviours", "behaviours", {"nargs": "+", "metavar": "NAME_OR_PATH",
                                        "help": "quick: sentiment, wedding, french, myopia, "
                                                "wealth_seeking or behaviour files (.json, "
                                                "docs/behaviours.md); standard/paper: myopia, "
                                                "wealth_seeking, sycophancy, agreeableness, "
                                                "anti_immigration or .json/.jsonl files"}),
        ("--corpus", "tax_corpus", {"metavar": "TEXT",
                                    "help": "text for the residual norms (quick) and the "
                                            "perplexity cost: builtin (quick's default, the "
                                            "same on every machine), wikitext (from the "
                                            "reference data) or a .txt file/folder"}),
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
    parser.add_argument("--unit-timeout", type=float, metavar="SECONDS",
                        help="ray: stop with an error naming the unit when one unit runs "
                             "longer, e.g. on a hung worker (default: an hour)")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or local HF folder (default: the "
                                        "profile's; the embedded SmolLM2 for quick)")
    parser.add_argument("--backend", choices=("hooked", "bridge"),
                        help="HookedTransformer (TransformerLens 3.x) or TransformerBridge "
                             "(default: hooked on TransformerLens 3.x, bridge on 4.x)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (checked before any work)")
    parser.add_argument("--dtype", choices=("float32", "bf16", "fp16"), help="weights dtype")


def _harness_parser(sub: Any) -> None:
    """``actsteer harness`` (:mod:`actsteer.cli.harness`)."""
    command = sub.add_parser(
        "harness", help="steering vs prompting in the AxBench protocol with local scorers "
                        "(concept, relevance, fluency; docs/harness.md)")
    command.add_argument("--profile", default="quick", choices=("quick", "standard", "judged"),
                         help="quick (sentiment, 8 instructions, 3 strengths; default), "
                              "standard (every built-in behaviour, 40 instructions) or judged "
                              "(CAA, PCA, probe, learned, surgery, ablation, clamp, "
                              "orthogonalised weights against prompting)")
    command.add_argument("--behaviours", nargs="+", metavar="NAME_OR_PATH",
                         help="sentiment, wedding, french, myopia, wealth_seeking or behaviour "
                              "files (.json, docs/behaviours.md)")
    command.add_argument("--instructions", type=int, metavar="N",
                         help="everyday instructions to use (4-40), split into two halves")
    command.add_argument("--strengths", type=float, nargs="+", metavar="F",
                         help="ladder of fractions of the residual norm, 0 included")
    command.add_argument("--methods", nargs="+", metavar="NAME",
                         help="steering, prompting, prompting+steering, or the judged rows "
                              "(docs/harness.md; default: the profile's)")
    command.add_argument("--layer", type=int, help="layer to steer at (default 2/3 depth)")
    command.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="set one config field (JSON value), e.g. max_new_tokens=32")
    _model_flags(command)
    command.add_argument("--out", type=Path, help="output folder (default: the profile's)")
    command.add_argument("--overwrite", action="store_true",
                         help="start the results log afresh if it was made with another config")
    _executor_flags(command)
    _flags(command)


def build_parser() -> argparse.ArgumentParser:
    from actsteer.paper import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog="actsteer",
        description="Activation steering on TransformerLens, and the reproduction of "
                    "'Extending Activation Steering to Broad Skills and Multiple Behaviours'.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    extract = sub.add_parser("extract", help="build a CAA vector from an A/B dataset or a "
                                             "behaviour file, print its diagnostics and save it")
    extract.add_argument("dataset", help="behaviour name, .json/.jsonl path, hub:<file>, or a "
                                         "behaviour file (docs/behaviours.md)")
    extract.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    _model_flags(extract)
    extract.add_argument("--data-dir", type=Path, help="folder of the paper's behaviour files")
    extract.add_argument("--n", type=int, default=None,
                         help="items to use (default: the paper's vector split, 500)")
    extract.add_argument("--site", default="resid_post",
                         choices=("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"))
    extract.add_argument("--read", default=None,
                         choices=("last", "answer", "answer_mean", "mean"),
                         help="where to read activations (default: last for A/B items, "
                              "answer_mean for a behaviour file's completions)")
    extract.add_argument("--method", default="mean_diff", choices=("mean_diff", "pca", "probe"))
    extract.add_argument("--format", dest="prompt_format", default="paper",
                         choices=("paper", "chat"))
    extract.add_argument("--batch-size", type=int, default=16)
    _flags(extract)

    _harness_parser(sub)

    plot = sub.add_parser("plot", help="write the figures (and print the table) of a "
                                       "results file")
    plot.add_argument("results", type=Path,
                      help="multi_behaviour.jsonl or broad_skills.jsonl (or a .json one)")
    plot.add_argument("--out", type=Path, default=None,
                      help="figure folder (default: beside the results file)")
    _flags(plot)
    return parser
