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
    expected = {"multi-behaviour": ["--behaviours", "--data-dir", "--layers", "--coefficients",
                                    "--model", "--backend", "--profile", "--device", "--dtype",
                                    "--seed", "--out"],
                "broad-skills": ["--layers", "--coefficients", "--text", "--profile"],
                "extract": ["--out", "--site", "--method", "--read"],
                "plot": ["results"], "demo": ["--out"]}[command]
    for option in expected:
        assert option in out


@pytest.mark.parametrize("argv, needle", [
    (["multi-behaviour", "--data-dir", "/no/such/folder"], "data_dir='/no/such/folder' is not"),
    (["multi-behaviour", "--behaviours", "telepathy"], "unknown behaviour 'telepathy'"),
    (["broad-skills", "--text", "/no/such/text"], "'/no/such/text' does not exist"),
    (["extract", "telepathy", "--out", "v.safetensors"], "unknown behaviour 'telepathy'"),
    (["plot", "/no/such/results.json"], "no results file"),
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


def test_debug_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["broad-skills", "--debug", "--text", str(tmp_path / "nope")])
    with pytest.raises(cli.CliError, match="no results file"):
        cli.main(["--debug", "plot", str(tmp_path / "missing.json")])


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
        ["multi-behaviour", "--layers", "3", "5", "--coefficients", "-2", "2", "--seed", "7",
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
    (["--set", "grid_multipliers=[0]"], "grid_multipliers=(0.0,) is invalid"),
    (["--profile", "huge"], "--profile 'huge' is not a profile"),
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
        (["broad-skills", "--out", str(a_file / "below")], "which is a file"),
        (["extract", "builtin:myopia", "--out", str(tmp_path)], "is a folder; give a file name"),
        (["extract", "builtin:myopia", "--out", str(a_file / "v.safetensors")], "which is a file"),
        (["demo", "--out", str(a_file)], "is a file"),
        (["multi-behaviour", "--device", "cuda:7", "--out", str(tmp_path / "o")], "cuda"),
        (["extract", "builtin:myopia", "--device", "warp", "--out", str(tmp_path / "v")],
         "is not a device"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["multi-behaviour", "--out", str(locked / "o")], "is not writable"))
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
    common = ["--quiet", "multi-behaviour", "--layers", "1", "--coefficients", "-2", "2",
              "--set", "tax_corpus=none", "--set", "n_vector=6", "--set", "n_grid=4",
              "--set", "n_test=4", "--set", "balance_letters=false", "--out", str(out)]
    code, _, err = _main(capsys, *common, "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and "no-such-model" in err
    code, _, err = _main(capsys, *common, "--model", str(tiny_folder), "--layers", "99")
    assert code == 2 and "outside the model's 4 layers" in err
    assert not (out / "multi_behaviour.jsonl").exists()
    code, _, err = _main(capsys, *common, "--model", str(tiny_folder))
    assert code == 0, err


def test_console_script_entry_point_exits_2(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "actsteer.cli", "plot",
                           str(tmp_path / "none.json")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("actsteer plot: error: no results")


def test_multi_behaviour_plot_and_extract_end_to_end(capsys, tmp_path, tiny_folder) -> None:
    out = tmp_path / "mb"
    code, stdout, err = _main(
        capsys, "--quiet", "multi-behaviour", "--model", str(tiny_folder), "--layers", "1",
        "--coefficients", "-2", "2", "--seed", "13", "--out", str(out))
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


def test_plot_of_an_unfinished_run_says_to_finish_it(capsys, tmp_path) -> None:
    partial = tmp_path / "broad_skills.json"
    partial.write_text(json.dumps({"config": {}, "cells": {}, "extra": {}}))
    code, _, err = _main(capsys, "plot", str(partial))
    assert code == 2 and "unfinished run" in err and "re-run" in err
    log = tmp_path / "multi_behaviour.jsonl"
    log.write_text(json.dumps({"format": FORMAT, "config": {}}) + "\n")
    code, _, err = _main(capsys, "plot", str(log))
    assert code == 2 and "unfinished run" in err and "re-run" in err


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
