"""Both TransformerLens lines: the default backend follows the installed line, HookedTransformer
on 4.x is refused with its fix, and a results log is resumed only on the line that wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

import actsteer.models.info as info
from actsteer.errors import InvalidValueError
from actsteer.executor import ModelSpec
from actsteer.paper.common import ConfigError, ModelConfig
from actsteer.results import ResultConfigMismatchError, ResultStore


def _has_hooked_transformer() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_default_backend_is_what_the_installed_line_has() -> None:
    # Independent of the version metadata the library reads: can we import the class?
    expected = "hooked" if _has_hooked_transformer() else "bridge"
    assert info.default_backend() == expected
    assert info.resolve_backend(None) == expected
    assert ModelConfig().backend == expected and ModelSpec("m").backend == expected
    assert info.transformer_lens_major() == (3 if expected == "hooked" else 4)


@pytest.fixture
def on_tl4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(info, "transformer_lens_major", lambda: 4)


def test_hooked_on_tl4_is_refused_with_the_fix(on_tl4: None, tiny_folder: Path) -> None:
    assert info.default_backend() == "bridge"
    with pytest.raises(InvalidValueError, match=r"backend 'hooked' needs TransformerLens 3.x.*"
                                                r"backend='bridge'.*transformer-lens>=3.9,<4"):
        info.resolve_backend("hooked")
    with pytest.raises(InvalidValueError, match=r"needs TransformerLens 3\.x"):
        ModelSpec("m", backend="hooked")
    with pytest.raises(ConfigError, match=r"model.backend='hooked' is invalid.*3.x"):
        ModelConfig(backend="hooked")
    import actsteer

    with pytest.raises(InvalidValueError, match=r"needs TransformerLens 3\.x"):
        actsteer.load_model(tiny_folder, backend="hooked")
    assert info.resolve_backend("bridge") == "bridge"
    with pytest.raises(InvalidValueError, match="unknown backend 'jax'"):
        info.resolve_backend("jax")


def test_results_configs_record_the_resolved_backend() -> None:
    config = ModelConfig()
    assert config.to_dict()["backend"] in ("hooked", "bridge")
    assert ModelConfig.from_dict(config.to_dict()) == config
    runtime = config.runtime()
    assert runtime["backend"] == config.backend
    assert runtime["transformer_lens_major"] == info.transformer_lens_major()


def _runtime(backend: str, major: int) -> dict[str, object]:
    return {"backend": backend, "transformer_lens": f"{major}.9.0",
            "transformer_lens_major": major}


def test_a_log_is_resumed_only_on_the_line_that_wrote_it(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultStore(path, {"a": 1}, runtime=_runtime("hooked", 3)) as store:
        store.put("cell", 1.0)
    before = path.read_bytes()
    with pytest.raises(ResultConfigMismatchError,
                       match=r"backend 'hooked' on TransformerLens 3.9.0 and this run uses "
                             r"backend 'bridge' on TransformerLens 4.9.0"):
        ResultStore(path, {"a": 1}, runtime=_runtime("bridge", 4))
    with pytest.raises(ResultConfigMismatchError, match="backend 'bridge' on TransformerLens 3"):
        ResultStore(path, {"a": 1}, runtime=_runtime("bridge", 3))
    assert path.read_bytes() == before  # refused before anything moved
    with ResultStore(path, {"a": 1}, runtime=_runtime("hooked", 3)) as store:
        assert store.get("cell") == 1.0  # the same line resumes
    # A log written before runtimes were recorded stays readable on either line.
    old = tmp_path / "old.jsonl"
    with ResultStore(old, {"a": 1}) as store:
        store.put("cell", 2.0)
    with ResultStore(old, {"a": 1}, runtime=_runtime("bridge", 4)) as store:
        assert store.get("cell") == 2.0
