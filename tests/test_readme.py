"""The README's quickstart runs as written, on the embedded model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_one_short_quickstart() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 16  # the issue asks for ~15 lines


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_blocks()[0], str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip().split("\n")
    assert len(printed) >= 2 and all(isinstance(line, str) for line in printed)
    model, vector, logits = namespace["model"], namespace["vector"], namespace["logits"]
    assert logits.shape[-1] == model.cfg.d_vocab and torch.isfinite(logits).all()
    assert (tmp_path / "myopia.safetensors").is_file()
    assert len(vector.layers) == model.cfg.n_layers
    # Leaving the with-block removed the hooks: the plain forward differs from the steered one.
    tokens = model.to_tokens(namespace["prompt"])
    with torch.no_grad():
        assert not torch.allclose(model(tokens), logits)
