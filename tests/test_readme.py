"""The README's quickstart runs as written, on the embedded model, and its steering shows."""

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
    assert len(blocks[0].strip().splitlines()) <= 20


@pytest.mark.slow
def test_quickstart_runs_and_its_steering_changes_the_text(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_blocks()[0], str(README), "exec"), namespace)
    out = capsys.readouterr().out
    model, vector, logits = namespace["model"], namespace["vector"], namespace["logits"]
    unsteered, steered = namespace["unsteered"], namespace["steered"]
    assert len(unsteered) == len(steered) >= 2
    # The example was chosen so that steering visibly changes every continuation.
    assert all(a.strip() != b.strip() for a, b in zip(unsteered, steered, strict=True)), out
    assert out.count("unsteered: ") == out.count("steered:   ") == len(steered)
    effect = namespace["effect"]
    assert effect.verdict == "moves" and effect.high < -1.0, effect  # as the README prints
    assert vector.meta.read_position == "answer_mean"
    # Leaving the with-block removed every hook, and the steered logits differ from plain ones.
    assert not any(point._forward_hooks or point._forward_pre_hooks
                   for point in model.hook_dict.values())
    tokens = model.to_tokens(namespace["prompts"][0])
    with torch.no_grad():
        plain = model(tokens)
    assert logits.shape == plain.shape
    assert (logits - plain).abs().max() > 0.1


def test_readme_is_short_and_its_links_exist() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 165
    for target in re.findall(r"\]\(((?:docs|notebooks|benchmarks)/[^)#]+)\)", text):
        assert (README.parent / target).exists(), target
