"""The ``actsteer`` command line: help, one-line errors with exit code 2, and a tiny
end-to-end run through ``multi-behaviour``, ``plot`` and ``extract``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actsteer import cli
from actsteer.results import FORMAT, read_results
from actsteer.vector import SteeringVector

COMMANDS = ("demo", "multi-behaviour", "broad-skills", "extract", "plot")


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(capsys, command: str) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: actsteer {command}")
    assert "--quiet" in out and "--debug" in out
    expected = {"multi-behaviour": ["--behaviours", "--corpus", "--data-dir", "--layers",
                                    "--coefficients",
                                    "--model", "--backend", "--profile", "--device", "--dtype",
                                    "--seed", "--out"],
                "broad-skills": ["--layers", "--coefficients", "--text", "--profile"],
                "extract": ["--out", "--site", "--method", "--read"],
                "plot": ["results"], "demo": ["--out"]}[command]
    for option in expected:
        assert option in out


@pytest.mark.parametrize("argv, needle", [
    (["multi-behaviour", "--profile", "standard", "--data-dir", "/no/such/folder"],
     "data_dir='/no/such/folder' is not"),
    (["multi-behaviour", "--profile", "standard", "--behaviours", "telepathy"],
     "unknown behaviour 'telepathy'"),
    (["multi-behaviour", "--behaviours", "telepathy"],
     "no built-in expressed behaviour 'telepathy'"),
    (["multi-behaviour", "--behaviours", "sentiment", "telepathy.json"],
     "behaviour file telepathy.json does not exist"),
    (["multi-behaviour", "--corpus", "wikipedia"], "tax_corpus='wikipedia' is invalid"),
    (["broad-skills", "--text", "/no/such/text"], "'/no/such/text' does not exist"),
    (["extract", "telepathy", "--out", "v.safetensors"], "unknown behaviour 'telepathy'"),
    (["plot", "/no/such/results.json"], "no results file"),
    (["multi-behaviour", "--unit-timeout", "5"], "--unit-timeout applies to --executor ray"),
    (["multi-behaviour", "--executor", "ray", "--unit-timeout", "0"],
     "--unit-timeout 0 is invalid"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv,
                                               needle) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, *argv)
    assert code == cli.EXIT_USAGE == 2
    lines = [line for line in err.splitlines() if line and not line.startswith("INFO")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"actsteer {argv[0]}: error: ") and needle in lines[0]
    assert "Traceback" not in err


def test_plot_rejects_non_json_and_unknown_files(capsys, tmp_path) -> None:
    bad = tmp_path / "multi_behaviour.json"
    bad.write_text("{not json")
    code, _, err = _main(capsys, "plot", str(bad))
    assert code == 2 and "is not JSON" in err
    other = tmp_path / "scores.json"
    other.write_text("{}")
    code, _, err = _main(capsys, "plot", str(other))
    assert code == 2 and "cannot tell which experiment" in err


def test_debug_shows_the_traceback(capsys, tmp_path) -> None:
    code, _, err = _main(capsys, "broad-skills", "--debug", "--text", str(tmp_path / "nope"))
    assert code == 2 and "Traceback" in err and "does not exist" in err.splitlines()[-1]
    code, _, err = _main(capsys, "--debug", "plot", str(tmp_path / "missing.json"))
    assert code == 2 and "Traceback" in err and "no results file" in err


def test_flags_work_before_and_after_the_command() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--quiet", "demo"]).quiet is True
    assert parser.parse_args(["demo", "--quiet"]).quiet is True
    assert parser.parse_args(["demo"]).quiet is False


def test_flags_config_file_and_set_reach_every_config_field(tmp_path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"n_test": 50, "scales": [-1, 1],
                                    "model": {"dtype": "bf16"}}))
    args = cli.build_parser().parse_args(
        ["multi-behaviour", "--profile", "standard", "--layers", "3", "5", "--coefficients",
         "-2", "2", "--seed", "7",
         "--config", str(settings), "--set", "n_test=300", "--set", "prompt_format=chat",
         "--set", "model.backend=bridge", "--set", "data_dir=null", "--backend", "hooked"])
    config = cli.experiment_config("multi-behaviour", args)
    assert (config.grid_layers, config.grid_multipliers, config.seed) == ((3, 5), (-2.0, 2.0), 7)
    assert config.n_test == 300  # --set wins over --config
    assert config.scales == (-1.0, 1.0) and config.prompt_format == "chat"
    assert (config.model.dtype, config.model.backend) == ("bf16", "bridge")
    assert config.data_dir is None


@pytest.mark.parametrize("argv, needle", [
    (["--set", "n_tset=3"], "unknown config keys ['n_tset']"),
    (["--set", "n_test"], "is not FIELD=VALUE"),
    (["--set", "model.size=3"], "unknown config keys ['size']"),
    (["--profile", "standard", "--set", "grid_multipliers=[0]"],
     "grid_multipliers=(0.0,) is invalid"),
    (["--profile", "huge"], "--profile 'huge' is not a profile"),
    (["--profile", "standard", "--set", "grid_layers=14"],
     "grid_layers=14 is invalid: expected a list of int, or null"),
    (["--set", "fraction=\"big\""], "fraction='big' is invalid: expected number"),
    (["--coefficients", "-1", "1"], "--coefficients does not apply to --profile quick"),
    (["--data-dir", "/tmp"], "--data-dir does not apply to --profile quick"),
])
def test_bad_settings_are_one_line(capsys, tmp_path, argv, needle) -> None:
    code, _, err = _main(capsys, "multi-behaviour", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_output_paths_and_devices_fail_before_any_work(capsys, tmp_path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (["multi-behaviour", "--out", str(a_file)], "is a file; give a folder"),
        (["broad-skills", "--out", str(a_file / "below")], "cannot be written"),
        (["extract", "builtin:myopia", "--out", str(tmp_path)], "is a folder; give a file name"),
        (["extract", "builtin:myopia", "--out", str(a_file / "v.safetensors")],
         "cannot be written"),
        (["demo", "--out", str(a_file)], "is a file"),
        (["multi-behaviour", "--device", "cuda:7", "--out", str(tmp_path / "o")], "cuda"),
        (["extract", "builtin:myopia", "--device", "warp", "--out", str(tmp_path / "v")],
         "is not a device"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["multi-behaviour", "--out", str(locked / "o")], "cannot be written"))
    try:
        for argv, needle in cases:
            code, _, err = _main(capsys, *argv)
            assert code == 2 and needle in err and "Traceback" not in err, (argv, err)
            assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    finally:
        locked.chmod(0o700)
    assert not (tmp_path / "o").exists() and not (tmp_path / "v").exists()


def test_a_typo_in_the_model_leaves_nothing_that_blocks_the_fix(capsys, tmp_path,
                                                                  tiny_folder) -> None:
    out = tmp_path / "mb"
    common = ["--quiet", "multi-behaviour", "--profile", "standard", "--behaviours",
              "builtin:myopia", "builtin:wealth_seeking", "--layers", "1", "--coefficients",
              "-2", "2", "--set", "steerability_layers=[1,3]",
              "--set", "tax_corpus=none", "--set", "n_vector=6", "--set", "n_grid=4",
              "--set", "n_test=4", "--set", "balance_letters=false", "--out", str(out)]
    code, _, err = _main(capsys, *common, "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and "no-such-model" in err
    code, _, err = _main(capsys, *common, "--model", str(tiny_folder), "--layers", "99")
    assert code == 2 and "outside the model's 4 layers" in err
    assert not (out / "multi_behaviour.jsonl").exists()
    code, _, err = _main(capsys, *common, "--model", str(tiny_folder))
    assert code == 0, err


_FRESH = ("import json, sys\n"
          "from actsteer.cli import main\n"
          "codes = []\n"
          "for argv in json.loads(sys.argv[1]):\n"
          "    try:\n"
          "        codes.append(main(argv))\n"
          "    except SystemExit as done:\n"
          "        codes.append(done.code)\n"
          "heavy = {'torch', 'transformer_lens', 'transformers.models.llama.modeling_llama'}\n"
          "print(json.dumps({'codes': codes, 'loaded': sorted(heavy & set(sys.modules))}))\n")


def _fresh(*argvs: list[str]) -> tuple[list[int], list[str], str, str]:
    """Run ``main`` on each argv in a new interpreter: exit codes, which of torch,
    TransformerLens and the Llama model code it imported, stdout and stderr."""
    done = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(argvs)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    *printed, last = done.stdout.strip().splitlines()
    report = json.loads(last)
    return report["codes"], report["loaded"], "\n".join(printed), done.stderr


def test_version_prints_the_package_version_without_torch() -> None:
    from actsteer._version import __version__

    codes, loaded, out, _ = _fresh(["--version"])
    assert codes == [0] and out == f"actsteer {__version__}"
    assert loaded == []


def test_layers_beyond_the_model_are_refused_before_any_weights_load(tmp_path,
                                                                     tiny_folder) -> None:
    out = ["--out", str(tmp_path / "o"), "--quiet"]
    codes, loaded, _, err = _fresh(
        ["multi-behaviour", "--layers", "99", *out],
        ["broad-skills", "--layers", "3", "30", *out],
        ["multi-behaviour", "--profile", "standard", "--model", str(tiny_folder),
         "--behaviours", "builtin:myopia", "--layers", "1", "4", *out],
        ["multi-behaviour", "--profile", "standard", "--model", str(tiny_folder),
         "--behaviours", "builtin:myopia", "--layers", "1", "--set",
         "steerability_layers=[0,7]", *out])
    assert codes == [2, 2, 2, 2], err
    lines = err.strip().splitlines()
    assert lines[0].endswith("--layers 99 is outside the model's 30 layers "
                             "(smollm2-135m-instruct); use 0..29")
    assert "--layers 30 is outside the model's 30 layers" in lines[1]
    assert "--layers 4 is outside the model's 4 layers" in lines[2] and "use 0..3" in lines[2]
    assert "steerability_layers 7 is outside the model's 4 layers" in lines[3]
    assert loaded == ["torch"]  # no model was built: neither TransformerLens nor Llama code
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_console_script_entry_point_exits_2(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "actsteer.cli", "plot",
                           str(tmp_path / "none.json")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("actsteer plot: error: no results")


def test_multi_behaviour_plot_and_extract_end_to_end(capsys, tmp_path, tiny_folder) -> None:
    out = tmp_path / "mb"
    code, stdout, err = _main(
        capsys, "--quiet", "multi-behaviour", "--profile", "standard", "--behaviours",
        "builtin:myopia", "builtin:wealth_seeking", "--model", str(tiny_folder), "--layers",
        "1", "--coefficients", "-2", "2", "--seed", "13", "--set", "n_vector=32",
        "--set", "n_grid=16", "--set", "n_test=24", "--set", "steerability_layers=[1,3]",
        "--set", "letter_free_items=8", "--set", "tax_documents=3", "--out", str(out))
    assert code == 0, err
    results = read_results(out / "multi_behaviour.jsonl")
    assert results["config"]["grid_layers"] == [1]
    assert results["config"]["grid_multipliers"] == [-2.0, 2.0]
    assert results["config"]["model"]["name"] == str(tiny_folder)
    assert "matching rate" in stdout and "myopia" in stdout and "wealth_seeking" in stdout
    figures = sorted(p.name for p in (out / "figures").glob("*.html"))
    assert figures == ["alignment_tax.html", "effects.html", "simultaneous.html",
                       "steerability.html", "steerability_by_layer.html"]

    replot = tmp_path / "replot"
    code, stdout, _ = _main(capsys, "plot", str(out / "multi_behaviour.jsonl"), "--out",
                            str(replot))
    assert code == 0 and (replot / "simultaneous.html").is_file()
    assert str(replot / "simultaneous.html") in stdout
    legacy = tmp_path / "legacy" / "multi_behaviour.json"  # a whole-file JSON results file
    legacy.parent.mkdir()
    extra = {k: v for k, v in results.items() if k not in ("config", "cells", "path")}
    legacy.write_text(json.dumps({"config": results["config"], "cells": results["cells"],
                                  "extra": extra}))
    code, _, err = _main(capsys, "plot", str(legacy))
    assert code == 0 and (legacy.parent / "figures" / "simultaneous.html").is_file(), err

    vector_path = tmp_path / "myopia.safetensors"
    code, stdout, err = _main(capsys, "--quiet", "extract", "builtin:myopia", "--model",
                              str(tiny_folder), "--n", "8", "--out", str(vector_path))
    assert code == 0, err
    vector = SteeringVector.load(vector_path)
    assert vector.meta.dataset == "myopia" and vector.meta.n_items == 8
    assert "8 pairs" in stdout



def test_a_behaviour_file_goes_through_extract_and_the_quick_profile(capsys, tmp_path,
                                                                     tiny_folder,
                                                                     gardening) -> None:
    path = tmp_path / "gardening.json"
    path.write_text(json.dumps(gardening))
    vector_path = tmp_path / "gardening.safetensors"
    code, stdout, err = _main(capsys, "--quiet", "extract", str(path), "--model",
                              str(tiny_folder), "--out", str(vector_path))
    assert code == 0, err
    vector = SteeringVector.load(vector_path)
    assert vector.meta.dataset == "gardening" and vector.meta.n_items == 3
    assert vector.meta.read_position == "answer_mean" and "3 pairs of gardening" in stdout

    out = tmp_path / "quick"
    code, stdout, err = _main(
        capsys, "--quiet", "multi-behaviour", "--behaviours", str(path), "sentiment",
        "--model", str(tiny_folder), "--layers", "1", "3", "--set", "n_grid=4",
        "--set", "n_test=6", "--set", "generate_prompts=0", "--set", "tax_documents=2",
        "--set", "tax_max_tokens=16", "--set", "n_resamples=50", "--out", str(out))
    assert code == 0, err
    results = read_results(out / "multi_behaviour.jsonl")
    assert results["behaviours"] == ["gardening", "sentiment"]
    for plan in ("unsteered", "individual:gardening", "simultaneous"):
        values = results["cells"][f"expressed-test/plan={plan}"]["values"]
        assert len(values["gardening"]) == 6 and len(values["sentiment"]) == 6
    assert "expressed-layers/behaviour=gardening/layer=3" in results["cells"]
    assert "gardening" in stdout and "WARNING" not in err


def test_a_malformed_behaviour_file_is_one_line_naming_it(capsys, tmp_path,
                                                        gardening) -> None:
    broken = {k: v for k, v in gardening.items() if k != "words"}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    for argv in (("multi-behaviour", "--behaviours", str(path)),
                 ("extract", str(path), "--out", str(tmp_path / "v.safetensors"))):
        code, _, err = _main(capsys, *argv)
        lines = [line for line in err.splitlines() if line and not line.startswith("INFO")]
        assert code == 2 and len(lines) == 1, err
        assert f"behaviour file {path}: field 'words' is missing" in lines[0]


def test_extract_rejects_too_many_items(capsys, tmp_path, tiny_folder) -> None:
    code, _, err = _main(capsys, "extract", "builtin:myopia", "--model", str(tiny_folder), "--n",
                         "100000", "--out", str(tmp_path / "v.safetensors"))
    assert code == 2 and "--n 100000 is outside 1..72" in err
    assert not (tmp_path / "v.safetensors").exists()


def test_module_paths_are_relative_to_cwd(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not Path("results").exists()
    code, _, _ = _main(capsys, "plot", "results/none.json")
    assert code == 2 and not Path("results").exists()  # a failed command creates nothing


def test_broad_skills_then_plot(capsys, tmp_path, tiny_folder) -> None:
    out = tmp_path / "bs"
    code, stdout, err = _main(
        capsys, "--quiet", "broad-skills", "--model", str(tiny_folder), "--layers", "1",
        "--coefficients", "0", "1", "4", "--out", str(out))
    assert code == 0, err
    saved = read_results(out / "broad_skills.jsonl")
    assert saved["config"]["layers"] == [1] and saved["config"]["coefficients"] == [0.0, 1.0, 4.0]
    swept = {cell["coefficient"] for key, cell in saved["cells"].items() if key != "baseline"}
    assert swept <= {1.0, 4.0} and swept
    assert "figures:" in stdout
    code, replotted, _ = _main(capsys, "plot", str(out / "broad_skills.jsonl"), "--out",
                               str(tmp_path / "again"))
    assert code == 0 and (tmp_path / "again" / "skills_tradeoff.html").is_file()
    assert "python" in replotted  # plot also prints the summary table


def test_plot_of_an_unfinished_run_shows_what_it_has(capsys, tmp_path) -> None:
    from actsteer.paper.multi_behaviour.expressed import ExpressedConfig

    partial = tmp_path / "broad_skills.json"
    partial.write_text(json.dumps({"config": {}, "cells": {}, "extra": {}}))
    code, _, err = _main(capsys, "plot", str(partial))
    assert code == 2 and "is not a broad-skills results file" in err
    log = tmp_path / "multi_behaviour.jsonl"
    config = {"kind": "expressed", **ExpressedConfig().results_config()}
    log.write_text(json.dumps({"format": FORMAT, "config": config}) + "\n")
    code, out, err = _main(capsys, "plot", str(log), "--out", str(tmp_path / "figures"))
    assert code == 0, err
    assert out.startswith("PARTIAL RUN") and "holds 0 finished cells" in out
    assert "sentiment" in out


@pytest.mark.parametrize("name, experiment", [
    ("multi_behaviour.jsonl", "multi-behaviour"), ("multi_behaviour.json", "multi-behaviour"),
    ("broad_skills.jsonl", "broad-skills"), ("broad_skills.json", "broad-skills"),
    ("broad_skills.jsonl.replaced-20250101-120000", "broad-skills"),
])
def test_plot_knows_the_experiment_from_either_file_name(name, experiment) -> None:
    from actsteer.paper import experiment_for

    assert experiment_for(name).name == experiment



def test_experiment_modules_run_the_same_cli(capsys) -> None:
    import experiments.broad_skills as bs
    import experiments.multi_behaviour as mb

    for module, command in ((mb, "multi-behaviour"), (bs, "broad-skills")):
        with pytest.raises(SystemExit) as stop:
            module.main(["--help"])
        assert stop.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: actsteer {command}")


# --------------------------------------------------------------------------- front door


def test_a_bug_shows_its_traceback_and_exits_1(capsys, monkeypatch) -> None:
    def broken(args) -> None:
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(cli, "cmd_plot", broken)
    code, _, err = _main(capsys, "plot", "x.jsonl")
    assert code == cli.EXIT_BUG == 1
    assert "Traceback" in err and "RuntimeError: an internal invariant broke" in err
    assert "this is a bug in actsteer" in err.splitlines()[-1]


def test_a_library_value_error_that_is_not_ours_is_a_bug_too(capsys, monkeypatch) -> None:
    def broken(args) -> None:
        int("not a number")  # a ValueError actsteer did not raise on purpose

    monkeypatch.setattr(cli, "cmd_plot", broken)
    code, _, err = _main(capsys, "plot", "x.jsonl")
    assert code == 1 and "Traceback" in err


def test_our_errors_and_os_errors_on_given_paths_are_one_line(capsys, monkeypatch,
                                                              tmp_path) -> None:
    from actsteer.errors import InvalidValueError

    def mistake(args) -> None:
        raise InvalidValueError("layer=99 is invalid: use 0..29")

    monkeypatch.setattr(cli, "cmd_plot", mistake)
    code, _, err = _main(capsys, "plot", "x.jsonl")
    assert (code, err.strip()) == (2, "actsteer plot: error: layer=99 is invalid: use 0..29")

    def unreadable(args) -> None:
        raise PermissionError(13, "Permission denied", str(args.results))

    monkeypatch.setattr(cli, "cmd_plot", unreadable)
    code, _, err = _main(capsys, "plot", str(tmp_path / "r.jsonl"))
    assert code == 2 and "Permission denied" in err and "Traceback" not in err

    def elsewhere(args) -> None:
        raise PermissionError(13, "Permission denied", "/usr/lib/something")

    monkeypatch.setattr(cli, "cmd_plot", elsewhere)
    code, _, err = _main(capsys, "plot", str(tmp_path / "r.jsonl"))
    assert code == 1 and "Traceback" in err  # not a path the user gave: a bug


@pytest.mark.parametrize("command, argv, says", [
    ("cmd_plot", ["plot", "x.jsonl"], "figures already written are complete"),
    ("cmd_extract", ["extract", "builtin:myopia", "--out", "v.safetensors"],
     "nothing was saved"),
    ("cmd_demo", ["demo"], "every finished cell is saved"),
])
def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch, command, argv, says) -> None:
    def interrupted(args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, command, interrupted)
    code, _, err = _main(capsys, *argv)
    assert code == cli.EXIT_INTERRUPTED == 130
    assert len(err.strip().splitlines()) == 1 and says in err


def test_outputs_and_the_results_lock_are_checked_before_data_or_model_load(
        capsys, tmp_path, monkeypatch) -> None:
    import actsteer.models
    from actsteer.results import ResultStore

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(actsteer.models, "load_model", no_loading)
    code, _, err = _main(capsys, "multi-behaviour", "--out", "/proc/actsteer-test/out")
    assert code == 2 and "cannot be written" in err
    code, _, err = _main(capsys, "extract", "builtin:myopia", "--out",
                         "/proc/actsteer-test/v.safetensors")
    assert code == 2 and "cannot be written" in err
    busy = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom actsteer.results import ResultStore\n"
         f"s = ResultStore({str(busy / 'multi_behaviour.jsonl')!r}, {{'a': 1}})\n"
         "print('held', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, _, err = _main(capsys, "multi-behaviour", "--out", str(busy))
        assert code == 2 and "being written by another run" in err
        assert f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    with ResultStore(busy / "multi_behaviour.jsonl", {"a": 1}):
        pass  # the lock is free again once its holder is gone


@pytest.mark.slow
def test_the_pinned_embedded_depth_is_the_converted_models() -> None:
    from actsteer.models.embedded import EMBEDDED_N_LAYERS, embedded_model_path

    config = json.loads((embedded_model_path() / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == EMBEDDED_N_LAYERS


def test_unit_timeout_reaches_the_ray_executor() -> None:
    pytest.importorskip("ray")
    parse = cli.build_parser().parse_args
    args = parse(["multi-behaviour", "--executor", "ray", "--unit-timeout", "7.5"])
    executor = cli.make_executor(args, cli.experiment_config("multi-behaviour", args))
    assert executor is not None and executor.unit_timeout_s == 7.5  # type: ignore[attr-defined]
    args = parse(["multi-behaviour", "--executor", "ray"])
    executor = cli.make_executor(args, cli.experiment_config("multi-behaviour", args))
    from actsteer.ray_executor import UNIT_TIMEOUT_S

    assert executor.unit_timeout_s == UNIT_TIMEOUT_S  # type: ignore[union-attr]


def test_the_demo_stores_its_wall_time_beside_its_results(capsys, tmp_path, monkeypatch) -> None:
    """The README's demo time comes from this record, so it must hold what ran and how long
    (the experiments themselves are stood in for by a timed pause: this tests the record)."""
    import time

    from actsteer.cli import commands
    from actsteer.paper import EXPERIMENTS

    ran: list[str] = []

    def pause(name, config, args, executor):
        ran.append(name)
        time.sleep(0.2)
        return f"table of {name}", []

    def harness(out, progress):
        ran.append("harness")
        time.sleep(0.2)
        return []

    monkeypatch.setattr(commands, "_run", pause)
    monkeypatch.setattr(commands, "_demo_harness", harness)
    code, out, _ = _main(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert code == 0 and ran == [*EXPERIMENTS, "harness"]
    record = json.loads((tmp_path / "demo" / commands.DEMO_RECORD).read_text())
    assert set(record["experiments_s"]) == {*EXPERIMENTS, "harness"}
    assert all(0.2 <= t < 5 for t in record["experiments_s"].values())
    assert record["wall_time_s"] >= sum(record["experiments_s"].values()) - 0.1
    assert record["cpu_count"] == os.cpu_count() and len(record["load_average_start"]) == 3
    assert record["command"] == f"actsteer demo --out {tmp_path / 'demo'}"
    assert f"wall time: {record['wall_time_s']:.0f} s" in out
