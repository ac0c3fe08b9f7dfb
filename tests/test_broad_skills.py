"""Tests of experiments.broad_skills on the tiny random model (and one slow SmolLM2 test)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import experiments.broad_skills as bs
from actsteer.accuracy import DocumentAccuracy, next_token_accuracy
from actsteer.corpora import Corpus, Document, language_of
from actsteer.extraction import corpus_mean
from actsteer.plan import single
from actsteer.results import ResultConfigMismatchError, ResultStore

WORDS = ("river", "mountain", "harvest", "village", "market", "winter", "sailor", "garden")


def _toy_pools(n: int = 12) -> tuple[Corpus, Corpus, Corpus]:
    text = [Document(f"The {WORDS[i % 8]} story number {i} tells how people lived by the "
                     f"{WORDS[(i + 3) % 8]} and sang.", "text", f"t{i}") for i in range(n)]
    code = []
    for i in range(n):
        code.append(Document(f"int f{i}(int x) {{ return x * {i} + 1; }}", "c", f"c{i}"))
        code.append(Document(f"template <typename T> T g{i}(T x) {{ return x + {i}; }}",
                             "cpp", f"p{i}"))
        code.append(Document(f"def h{i}(x):\n    return x - {i}\n", "python", f"y{i}"))
    python = [Document(f"def k{i}(a, b):\n    '''Add.'''\n    return a + b * {i}\n",
                       "python", f"k{i}") for i in range(n)]
    return Corpus("text", tuple(text)), Corpus("code", tuple(code)), Corpus("py", tuple(python))


def _config(tmp_path: Path, **overrides: Any) -> bs.BroadSkillsConfig:
    base = bs.BroadSkillsConfig(
        model="tiny", device="cpu", n_train=4, n_valid=3, max_tokens=32, layers=(1, 2),
        coefficients=(0.0, 1.0, 2.0, 4.0), vectors=("general", "python", "general_permuted",
                                                     "python_random"),
        batch_size=4, n_resamples=20, out_dir=str(tmp_path / "out"))
    return replace(base, **overrides)


def _toy_corpora(config: bs.BroadSkillsConfig) -> bs.SkillCorpora:
    return bs.build_corpora(config, pools=_toy_pools())


def _ids(corpus: Corpus) -> set[str]:
    return {d.doc_id for d in corpus}


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_validation(tmp_path: Path) -> None:
    config = _config(tmp_path, text_path="x.txt", code_roots=("a", "b"))
    data = json.loads(json.dumps(config.to_dict()))
    assert bs.BroadSkillsConfig.from_dict(data) == config
    quick = bs.profile("quick")
    assert bs.BroadSkillsConfig.from_dict(json.loads(json.dumps(quick.to_dict()))) == quick
    assert quick.layers == (9, 14)
    paper = bs.profile("paper")
    assert paper.layers == (0, 5, 10, 15, 20, 25, 30) and len(paper.coefficients) == 32
    with pytest.raises(bs.ConfigError, match="coefficients"):
        _config(tmp_path, coefficients=(1.0, 2.0))
    with pytest.raises(bs.ConfigError, match="'sideways'"):
        _config(tmp_path, source="sideways")
    with pytest.raises(bs.ConfigError, match="vectors"):
        _config(tmp_path, vectors=("general", "poetry"))
    with pytest.raises(bs.ConfigError, match="n_train=0"):
        _config(tmp_path, n_train=0)
    with pytest.raises(bs.ConfigError, match="stop_below"):
        _config(tmp_path, stop_below=1.5)
    with pytest.raises(bs.ConfigError, match="unknown config keys"):
        bs.BroadSkillsConfig.from_dict({"colour": "red"})
    with pytest.raises(bs.ConfigError, match="unknown profile"):
        bs.profile("huge")


# --------------------------------------------------------------------------- corpora


@pytest.fixture(scope="module")
def offline_corpora() -> tuple[bs.BroadSkillsConfig, bs.SkillCorpora]:
    config = bs.BroadSkillsConfig(n_train=10, n_valid=6, max_per_language=8, seed=3)
    return config, bs.build_corpora(config)


def test_offline_split_disjoint_and_deterministic(offline_corpora: Any) -> None:
    config, corpora = offline_corpora
    train_ids = set().union(*(_ids(c) for c in corpora.train.values()))
    for name, valid in corpora.valid.items():
        assert len(valid) == config.n_valid, name
        assert not _ids(valid) & train_ids, f"{name} validation overlaps training"
    for name, train in corpora.train.items():
        assert len(train) == config.n_train and len(_ids(train)) == config.n_train, name
    again = bs.build_corpora(config)
    for name in corpora.train:
        assert [d.doc_id for d in again.train[name]] == [d.doc_id for d in corpora.train[name]]
        assert [d.doc_id for d in again.valid[name]] == [d.doc_id for d in corpora.valid[name]]
    other = bs.build_corpora(replace(config, seed=4))
    assert _ids(other.valid["python"]) != _ids(corpora.valid["python"])


def test_offline_language_labels(offline_corpora: Any) -> None:
    _, corpora = offline_corpora
    code = corpora.valid["code"]
    assert "python" not in code.languages()
    assert len(code.languages()) >= 2  # a mix, not one language
    assert all(language_of(d.source) == d.language for d in code)
    assert set(corpora.valid["python"].languages()) == {"python"}
    assert all(d.source.endswith(".py") for d in corpora.valid["python"])
    assert set(corpora.valid["text"].languages()) == {"text"}
    mix = corpora.language_mix()
    assert mix["valid"]["code"] == code.languages()
    assert sum(mix["train"]["code"].values()) == len(corpora.train["code"])


def test_toy_split_keeps_python_valid_out_of_code_training(tmp_path: Path) -> None:
    text, code, python = _toy_pools()
    shared = python.documents[:6]  # the same files in both pools (like the stdlib offline)
    code = Corpus("code", code.documents + shared)
    config = _config(tmp_path)
    corpora = bs.build_corpora(config, pools=(text, code, python))
    assert not _ids(corpora.valid["python"]) & _ids(corpora.train["code"])
    with pytest.raises(ValueError, match="non-Python code documents"):
        big_text, _, big_python = _toy_pools(30)
        small_code = _toy_pools(3)[1]  # 9 documents: 5 left after training, < n_valid
        bs.build_corpora(replace(config, n_valid=6), pools=(big_text, small_code, big_python))


# --------------------------------------------------------------------------- vectors


def test_vectors_are_mean_differences(tiny_model: Any, tmp_path: Path) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    vectors = bs.skill_vectors(tiny_model, corpora, config)

    def mean(name: str) -> torch.Tensor:
        return corpus_mean(tiny_model, corpora.train[name].texts(), max_tokens=32,
                           batch_size=3)

    text, code, python = mean("text"), mean("code"), mean("python")
    torch.testing.assert_close(vectors["general"].directions, text - code)
    torch.testing.assert_close(vectors["python"].directions, text - python)
    assert not torch.allclose(vectors["general"].directions, vectors["python"].directions)
    for control, base in (("general_permuted", "general"), ("python_random", "python")):
        got, ref = vectors[control].directions, vectors[base].directions
        torch.testing.assert_close(got.norm(dim=-1), ref.norm(dim=-1))
        assert not torch.allclose(got, ref)
    permuted = vectors["general_permuted"].directions
    torch.testing.assert_close(permuted.sort(dim=-1).values,
                               vectors["general"].directions.sort(dim=-1).values)


# --------------------------------------------------------------------------- evaluation


def test_coefficient_zero_is_unsteered_exactly(tiny_model: Any, tmp_path: Path,
                                               greedy_sequences: list[list[int]]) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    vector = bs.skill_vectors(tiny_model, corpora, config)["general"]
    data = bs.eval_set_from_sequences(tiny_model, "text", greedy_sequences, batch_size=2)
    reference = next_token_accuracy(tiny_model, data.sequences, None, k=10, batch_size=2)
    assert int(reference.top1.sum()) >= 15  # real hits (greedy continuations)
    for cache_bytes in (0, 2**30):  # full forward, then prefix reuse
        zero = bs.steered_accuracy(tiny_model, data, single(vector, 2, 0.0), 2, k=10,
                                   cache_bytes=cache_bytes)
        assert torch.equal(zero.top1, reference.top1) and torch.equal(zero.topk, reference.topk)
        assert torch.equal(zero.tokens, reference.tokens)
    assert 2 in data.cache  # the prefix was cached
    # a large coefficient changes predictions, and the prefix path equals the full path
    big = single(vector, 2, 50.0)
    full = bs.steered_accuracy(tiny_model, data, big, 2, k=10, cache_bytes=0)
    cached = bs.steered_accuracy(tiny_model, data, big, 2, k=10, cache_bytes=2**30)
    assert torch.equal(full.top1, cached.top1) and torch.equal(full.topk, cached.topk)
    assert int(full.top1.sum()) < int(reference.top1.sum())  # steering cost hits

    def logits_changed() -> bool:
        from actsteer.steering import run as steered_run

        batch = data.batches[0]
        plain = steered_run(tiny_model, batch, None)
        steered = steered_run(tiny_model, batch, big)
        return not torch.allclose(plain, steered)

    assert logits_changed()


def test_run_baseline_equals_unsteered_model(tiny_model: Any, tmp_path: Path) -> None:
    config = _config(tmp_path, vectors=("general",), layers=(1,), coefficients=(0.0, 1.0))
    corpora = _toy_corpora(config)
    results = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    for name in bs.EVAL_SETS:
        data = bs.make_eval_set(tiny_model, name, corpora.valid[name].texts(), max_tokens=32,
                                batch_size=4)
        ref = next_token_accuracy(tiny_model, data.sequences, None, k=10, batch_size=4)
        cell = results["cells"]["baseline"][name]
        assert cell["top1_docs"] == ref.top1.tolist() and cell["topk_docs"] == ref.topk.tolist()
        assert cell["n_tokens"] == int(ref.tokens.sum())
    assert results["language_mix"]["valid"]["code"] == corpora.valid["code"].languages()
    assert (Path(config.out_dir) / "vectors" / "general.safetensors").is_file()
    # a random model scores (almost) nothing: undefined relative accuracies still report
    assert "general" in bs.summary_table(results)
    assert len(bs.write_figures(results, tmp_path / "figs")) == 2


# --------------------------------------------------------------------------- sweep (fake scores)


def _fake_rate(name: str, vector: str, coefficient: float) -> float:
    """Synthetic accuracy: the vector's skill falls fast, the rest slowly."""
    drop = 0.3 if name == bs.skill_of(vector) else 0.05
    return max(0.0, 0.8 * (1 - drop * coefficient))


@pytest.fixture
def fake_scores(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, float]]:
    calls: list[tuple[str, int, float]] = []

    def counts(data: bs.EvalSet, rate: float) -> DocumentAccuracy:
        tokens = data.tokens
        hits = (tokens.double() * rate).floor().long()
        return DocumentAccuracy(hits, torch.minimum(tokens, hits + 1), tokens, 10)

    def fake_steered(model: Any, data: bs.EvalSet, plan: Any, layer: int, *, k: int,
                     cache_bytes: int = 0) -> DocumentAccuracy:
        injection = plan.injections[0]
        calls.append((injection.label, layer, injection.coefficient))
        return counts(data, _fake_rate(data.name, injection.label, injection.coefficient))

    def fake_baseline(model: Any, sequences: Any, plan: Any = None, **kwargs: Any
                      ) -> DocumentAccuracy:
        tokens = torch.tensor([len(s) - 1 for s in sequences])
        hits = (tokens.double() * 0.8).floor().long()
        return DocumentAccuracy(hits, torch.minimum(tokens, hits + 1), tokens, 10)

    monkeypatch.setattr(bs, "steered_accuracy", fake_steered)
    monkeypatch.setattr(bs, "next_token_accuracy", fake_baseline)
    return calls


def test_sweep_stops_adaptively_and_interpolates(tiny_model: Any, tmp_path: Path,
                                                 fake_scores: list[Any]) -> None:
    config = _config(tmp_path, coefficients=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0), stop_below=0.05)
    results = bs.run(config, model=tiny_model, progress=False, corpora=_toy_corpora(config))
    # skill rate 0.8 * (1 - 0.3 c): c=3 -> 0.1 relative 0.125 (>= 5%), c=4 -> 0 (< 5%): stop
    per_sweep = {(v, layer): sorted({c for vv, ll, c in fake_scores if (vv, ll) == (v, layer)})
                 for v in config.vectors for layer in (1, 2)}
    assert all(coefs == [1.0, 2.0, 3.0, 4.0] for coefs in per_sweep.values()), per_sweep
    assert len(fake_scores) == len(per_sweep) * 4 * len(bs.EVAL_SETS)
    head = results["headline"]["general/L1"]
    assert head["skill"] == "code"
    # relative skill 1 - 0.3c (up to flooring) crosses 0.5 near c = 5/3; text is 1 - 0.05c
    assert head["text"]["coefficient"]["value"] == pytest.approx(5 / 3, abs=0.1)
    assert head["text"]["text_rel"]["value"] == pytest.approx(1 - 0.05 * 5 / 3, abs=0.04)
    table = bs.summary_table(results)
    assert "python_random" in table
    assert f"{head['text']['coefficient']['value']:.2f}" in table
    paths = bs.write_figures(results, tmp_path / "figs")
    names = {p.name for p in paths}
    assert {"skills_general.html", "skills_python.html", "skills_tradeoff.html"} <= names
    html = (tmp_path / "figs" / "skills_tradeoff.html").read_text()
    assert "general L1" in html and "python L2" in html
    # plotly.js is shared beside the figures (offline, no CDN), not inlined into each.
    assert 'src="plotly.min.js"' in html and len(html) < 200_000
    assert (tmp_path / "figs" / "plotly.min.js").stat().st_size > 1_000_000


def test_resume_skips_finished_cells(tiny_model: Any, tmp_path: Path,
                                     fake_scores: list[Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    first = len(fake_scores)
    assert first > 0
    means: list[int] = []
    monkeypatch.setattr(bs, "corpus_mean", lambda *a, **k: means.append(1))  # type: ignore
    again = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    assert len(fake_scores) == first, "a finished cell was recomputed"
    assert means == [], "vectors were re-extracted instead of loaded"
    assert again["headline"].keys() == {f"{v}/L{layer}" for v in config.vectors
                                        for layer in (1, 2)}


def test_other_documents_never_resume_old_cells_or_vectors(tiny_model: Any, tmp_path: Path,
                                                           fake_scores: list[Any]) -> None:
    config = _config(tmp_path, vectors=("general",), layers=(1,))
    bs.run(config, model=tiny_model, progress=False, corpora=_toy_corpora(config))
    text, code, python = _toy_pools(14)  # same config, more documents to choose from
    other = bs.build_corpora(config, pools=(text, code, python))
    assert other.fingerprint() != _toy_corpora(config).fingerprint()
    with pytest.raises(ResultConfigMismatchError, match=r"corpora.*another output folder"):
        bs.run(config, model=tiny_model, progress=False, corpora=other)
    # Deleting the results file to start again must not reuse vectors of the old documents.
    (tmp_path / "out" / bs.RESULTS_FILE).unlink()
    means: list[str] = []
    real = bs.corpus_mean

    def spy(model: Any, texts: Any, **kwargs: Any) -> Any:
        means.append("mean")
        return real(model, texts, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bs, "corpus_mean", spy)
        bs.run(config, model=tiny_model, progress=False, corpora=other)
    assert means, "vectors from other documents were reused"


def test_crash_keeps_finished_cells(tiny_model: Any, tmp_path: Path,
                                    fake_scores: list[Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    working = bs.steered_accuracy

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(fake_scores) >= 7:  # the third coefficient cell dies half-way
            raise RuntimeError("boom")
        return working(*args, **kwargs)

    monkeypatch.setattr(bs, "steered_accuracy", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    store = ResultStore(Path(config.out_dir) / bs.RESULTS_FILE,
                        config={**config.results_config(), "corpora": corpora.fingerprint()})
    done = [key for key in store.cells if key.startswith("sweep/")]
    assert len(done) == 2 and store.has("baseline")
    monkeypatch.setattr(bs, "steered_accuracy", working)
    fake_scores.clear()
    results = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    assert all((label, layer, c) not in fake_scores
               for label, layer, c in [(store.get(k)["vector"], store.get(k)["layer"],
                                        store.get(k)["coefficient"]) for k in done])
    assert len([k for k in results["cells"] if k.startswith("sweep/")]) == 2 * 4 * 3


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.mark.slow
def test_general_vector_hurts_code_more_than_text(smol: Any, tmp_path: Path) -> None:
    config = bs.profile("quick", n_train=24, n_valid=12, max_tokens=96, layers=(14,),
                        coefficients=(0.0, 1.0, 2.0), vectors=("general",),
                        n_resamples=100, out_dir=str(tmp_path / "smol"))
    results = bs.run(config, model=smol, progress=False)
    gaps = []
    for c in config.coefficients[1:]:
        cell = results["cells"].get(bs.coefficient_key("general", 14, c))
        if cell is not None:
            gaps.append(cell["text"]["rel_top1"]["value"] - cell["code"]["rel_top1"]["value"])
    assert gaps and max(gaps) > 0.05, gaps


def test_controls_follow_a_layer_override_and_must_be_swept_layers() -> None:
    assert bs.profile("quick").control_layers == (14,)
    assert bs.profile("quick", layers=(5, 9)).control_layers == (9,)
    assert bs.profile("quick", layers=(9, 14, 20)).control_layers == (14,)
    config = bs.profile("quick", layers=(5, 9))
    assert bs.is_swept(config, "general_permuted", 9)
    assert not bs.is_swept(config, "general_permuted", 5)
    with pytest.raises(bs.ConfigError, match=r"control_layers=\(14,\) is invalid.*subset"):
        bs.profile("quick", layers=(5, 9), control_layers=(14,))
