#!/usr/bin/env python3
"""Does installing actsteer leave a user's environment as it was?

A user who already has TransformerLens 4 or SAELens installed runs ``pip install actsteer``
(here ``pip install -e <repo>``, no constraints file). That must only *add* packages: if
pip downgrades or upgrades anything the user already had, one of actsteer's dependency
ranges is narrower than it needs to be.

For each case, in a fresh venv inside a temporary folder:

1. ``pip install torch==2.13.0`` (pinned: a looser torch can resolve to a multi-GB CUDA
   build), then the user's package (``transformer-lens==4.3.0`` or ``sae-lens==6.54.12``)
   without any of actsteer's constraints;
2. ``pip freeze`` before, ``pip install -e <repo>``, ``pip freeze`` after;
3. pass only if every package of the first freeze has the same version in the second
   (new packages are fine), and ``import actsteer`` works.

Usage::

    python3 scripts/check_install.py                  # both cases
    python3 scripts/check_install.py --case sae-lens  # one case
    python3 scripts/check_install.py --keep           # keep the venvs (prints where)

Exit status 0 when every case passes. Takes a few minutes with a warm pip cache.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
CASES: dict[str, str] = {
    "transformer-lens": "transformer-lens==4.3.0",
    "sae-lens": "sae-lens==6.54.12",
}


def _name(raw: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", raw).lower()


def parse_freeze(text: str) -> dict[str, str]:
    """``{name: version}`` from ``pip freeze`` output; an editable or direct-URL line
    (``name @ url``, ``-e ...``) maps to its whole requirement text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e "):  # pip writes "-e <path>" for a local editable install
            match = re.search(r"#egg=([A-Za-z0-9_.-]+)", line)
            out[_name(match.group(1)) if match else f"(editable) {line[3:]}"] = line
        elif " @ " in line:
            name, _, url = line.partition(" @ ")
            out[_name(name)] = "@ " + url
        elif "==" in line:
            name, _, version = line.partition("==")
            out[_name(name)] = version
    return out


def _run(python: Path, *args: str, log: Path) -> str:
    """Run ``python -m <args>``; append its output to ``log``; raise with the tail if it
    fails."""
    command = [str(python), "-m", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise RuntimeError(f"`{' '.join(command)}` exited {done.returncode}:\n{tail}")
    return done.stdout


def check_case(label: str, requirement: str, root: Path) -> bool:
    """One case (see the module docstring); prints what changed and returns whether it
    passed."""
    start = time.monotonic()
    env_dir = root / label
    log = root / f"{label}.log"
    print(f"== {label}: {TORCH}, then {requirement}, then pip install -e {REPO}", flush=True)
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(python, "pip", "install", "--quiet", TORCH, log=log)
    _run(python, "pip", "install", "--quiet", requirement, log=log)
    before = parse_freeze(_run(python, "pip", "freeze", log=log))
    _run(python, "pip", "install", "--quiet", "-e", str(REPO), log=log)
    after = parse_freeze(_run(python, "pip", "freeze", log=log))

    changed = {name: (version, after.get(name, "(removed)"))
               for name, version in before.items() if after.get(name) != version}
    added = sorted(set(after) - set(before))
    for name, (old, new) in sorted(changed.items()):
        print(f"   CHANGED {name}: {old} -> {new}")
    print(f"   {len(before)} packages before, {len(added)} added: {', '.join(added) or '-'}")
    for key in ("torch", "transformer-lens", "sae-lens", "transformers"):
        if key in after:
            print(f"   {key} {after[key]}")
    probe = ("import actsteer, transformer_lens, transformers; from importlib.metadata import "
             "version; print(actsteer.__version__, version('transformer-lens'), "
             "transformers.__version__)")
    imported = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                              check=False)
    if imported.returncode == 0:
        print(f"   import actsteer: ok (actsteer, TL, transformers = {imported.stdout.strip()})")
    else:
        print("   import actsteer: FAILED\n" + "\n".join(
            "     " + line for line in imported.stderr.splitlines()[-15:]))
    passed = not changed and imported.returncode == 0
    print(f"   {'PASS' if passed else 'FAIL'} ({time.monotonic() - start:.0f} s; log {log})",
          flush=True)
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="run only this case (repeatable; default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the venvs and logs")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="actsteer-install-check-"))
    start = time.monotonic()
    results: dict[str, bool] = {}
    for label in args.case or list(CASES):
        try:
            results[label] = check_case(label, CASES[label], root)
        except RuntimeError as error:  # a pip step failed: say which, keep its log
            print(f"   FAIL: {error}", flush=True)
            results[label] = False
    if args.keep or not all(results.values()):
        print(f"venvs and logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    verdict = ", ".join(f"{label} {'PASS' if ok else 'FAIL'}" for label, ok in results.items())
    print(f"== {verdict} ({time.monotonic() - start:.0f} s in all)")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
