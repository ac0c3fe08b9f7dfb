"""The package boundary: the library never imports the repository's experiments/, and the
wheel ships actsteer and nothing else at the top level."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_library_module_imports_experiments() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p)
                                                  if m.split(".")[0] == "experiments")
                 for p in (ROOT / "actsteer").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_imports_inside_functions(tmp_path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from experiments import multi_behaviour\n")
    assert "experiments" in _imported_modules(sample)


def test_wheel_has_only_actsteer_at_the_top_level(tmp_path) -> None:
    # Build from a clean copy: setuptools reuses a source tree's build/ folder, which can
    # hold modules deleted since.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "actsteer", source / "actsteer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "experiments", source / "experiments",
                    ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("actsteer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"actsteer"}
    # the package's own data and the reproduction ship inside it
    assert "actsteer/py.typed" in names
    assert any(n.startswith("actsteer/paper/multi_behaviour/") for n in names)
    assert any(n.endswith(".jsonl") for n in names)


API_LIMIT = 35


def test_public_api_is_small_and_every_name_is_documented() -> None:
    import re

    import actsteer

    names = list(actsteer.__all__)
    assert len(names) <= API_LIMIT, f"{len(names)} public names; move some to their modules"
    assert set(names) == {"__version__", *actsteer._EXPORTS}
    documented = set(re.findall(r"^\| `([A-Za-z_]+)` \|", (ROOT / "docs" / "api.md").read_text(
        encoding="utf-8"), re.MULTILINE))
    assert set(names) - documented == set(), "add a line to docs/api.md for each public name"
    for name in names:
        assert getattr(actsteer, name) is not None


def test_importing_actsteer_or_its_cli_does_not_load_torch() -> None:
    code = ("import sys, actsteer, actsteer.cli; actsteer.cli.build_parser(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_unknown_names_say_where_to_look() -> None:
    import pytest

    import actsteer

    with pytest.raises(AttributeError, match=r"docs/api\.md"):
        _ = actsteer.not_a_name
    assert actsteer.effects.paired_effect is actsteer.paired_effect  # modules load lazily too
