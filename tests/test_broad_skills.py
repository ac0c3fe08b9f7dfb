"""The broad-skills reproduction on the tiny random model (and one slow SmolLM2 test)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import actsteer.paper.broad_skills as bs
from actsteer.accuracy import Documents, accuracy_sweep, next_token_accuracy
from actsteer.data.corpora import Corpus, Document, language_of
from actsteer.executor import LocalExecutor, Shard
from actsteer.extraction import corpus_mean
from actsteer.paper.broad_skills import stages
from actsteer.paper.broad_skills.corpora import SkillCorpora, _drop, build_corpora
from actsteer.paper.broad_skills.keys import BaselineKey, SweepKey
from actsteer.paper.common import ConfigError, ModelConfig
from actsteer.plan import single
from actsteer.results import (
    ResultConfigMismatchError,
    ResultStore,
    merge_results,
    read_results,
)

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
    python = [Document(f"def k{i}(a, b):\n    \'\'\'Add.\'\'\'\n    return a + b * {i}\n",
                       "python", f"k{i}") for i in range(n)]
    return Corpus("text", tuple(text)), Corpus("code", tuple(code)), Corpus("py", tuple(python))


def _config(tmp_path: Path, **overrides: Any) -> bs.BroadSkillsConfig:
    base = bs.BroadSkillsConfig(
        model=ModelConfig(name="tiny", device="cpu"), n_train=4, n_valid=3, max_tokens=32,
        layers=(1, 2), coefficients=(0.0, 1.0, 2.0, 4.0),
        vectors=("general", "python", "general_permuted", "python_random"),
        batch_size=4, n_resamples=20, out_dir=str(tmp_path / "out"))
    return replace(base, **overrides)


def _toy_corpora(config: bs.BroadSkillsConfig) -> SkillCorpora:
    return build_corpora(config, pools=_toy_pools())


def _ids(corpus: Corpus) -> set[str]:
    return {d.doc_id for d in corpus}


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_validation(tmp_path: Path) -> None:
    config = _config(tmp_path, text_path="x.txt", code_roots=("a", "b"))
    data = json.loads(json.dumps(config.to_dict()))
    assert bs.BroadSkillsConfig.from_dict(data) == config
    quick = bs.profile("quick")
    assert bs.BroadSkillsConfig.from_dict(json.loads(json.dumps(quick.to_dict()))) == quick
    assert quick.layers == (14,) and quick.stop_below == 0.5
    paper = bs.profile("paper")
    assert paper.layers == (0, 5, 10, 15, 20, 25, 30) and len(paper.coefficients) == 32
    with pytest.raises(ConfigError, match="coefficients"):
        _config(tmp_path, coefficients=(1.0, 2.0))
    with pytest.raises(ConfigError, match="'sideways'"):
        _config(tmp_path, source="sideways")
    with pytest.raises(ConfigError, match="vectors"):
        _config(tmp_path, vectors=("general", "poetry"))
    with pytest.raises(ConfigError, match="n_train=0"):
        _config(tmp_path, n_train=0)
    with pytest.raises(ConfigError, match="stop_below"):
        _config(tmp_path, stop_below=1.5)
    with pytest.raises(ConfigError, match="unknown config keys"):
        bs.BroadSkillsConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="unknown profile"):
        bs.profile("huge")


# --------------------------------------------------------------------------- corpora


@pytest.fixture(scope="module")
def offline_corpora() -> tuple[bs.BroadSkillsConfig, SkillCorpora]:
    config = bs.BroadSkillsConfig(n_train=10, n_valid=6, max_per_language=8, seed=3)
    return config, build_corpora(config)


def test_offline_split_disjoint_and_deterministic(offline_corpora: Any) -> None:
    config, corpora = offline_corpora
    train_ids = set().union(*(_ids(c) for c in corpora.train.values()))
    for name, valid in corpora.valid.items():
        assert len(valid) == config.n_valid, name
        assert not _ids(valid) & train_ids, f"{name} validation overlaps training"
    for name, train in corpora.train.items():
        assert len(train) == config.n_train and len(_ids(train)) == config.n_train, name
    again = build_corpora(config)
    for name in corpora.train:
        assert [d.doc_id for d in again.train[name]] == [d.doc_id for d in corpora.train[name]]
        assert [d.doc_id for d in again.valid[name]] == [d.doc_id for d in corpora.valid[name]]
    other = build_corpora(replace(config, seed=4))
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
    corpora = build_corpora(config, pools=(text, code, python))
    assert not _ids(corpora.valid["python"]) & _ids(corpora.train["code"])
    with pytest.raises(ValueError, match="non-Python code documents"):
        big_text, _, big_python = _toy_pools(30)
        small_code = _toy_pools(3)[1]  # 9 documents: 5 left after training, < n_valid
        build_corpora(replace(config, n_valid=6), pools=(big_text, small_code, big_python))


# --------------------------------------------------------------------------- vectors


def test_vectors_are_mean_differences(tiny_model: Any, tmp_path: Path) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    vectors = stages.skill_vectors(tiny_model, corpora, config)

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


# --------------------------------------------------------------------------- run


_GREEDY: dict[str, list[str]] = {}


def _greedy(model: Any, seed: str) -> str:
    """A text the tiny random model predicts: its own greedy continuation, decoded."""
    if seed not in _GREEDY:
        ids = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer(seed).input_ids]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=10, do_sample=False, verbose=False,
                                 stop_at_eos=False, use_past_kv_cache=False)
        _GREEDY[seed] = [model.tokenizer.decode(out[0, 1:])]
    return _GREEDY[seed][0]


def _greedy_pools(model: Any, n: int = 12) -> tuple[Corpus, Corpus, Corpus]:
    """Pools shaped like :func:`_toy_pools` whose documents the random model predicts, so
    accuracies (and relative accuracies) are not all zero."""
    text = [Document(_greedy(model, f"{WORDS[i % 8]} {i}"), "text", f"t{i}") for i in range(n)]
    code = [Document(_greedy(model, f"{lang} {i}"), lang, f"{lang}{i}")
            for i in range(n) for lang in ("c", "cpp", "python")]
    python = [Document(_greedy(model, f"py {i}"), "python", f"k{i}") for i in range(n)]
    return Corpus("text", tuple(text)), Corpus("code", tuple(code)), Corpus("py", tuple(python))


def test_run_baseline_and_cells_are_the_engine_s_numbers(tiny_model: Any, tmp_path: Path
                                                        ) -> None:
    """Baseline and every sweep cell equal an independent next-token accuracy of the
    same documents under the same plan (so the run cannot score at the wrong layer)."""
    config = _config(tmp_path, vectors=("general",), layers=(1,), coefficients=(0.0, 30.0),
                     stop_below=0.0)
    corpora = build_corpora(config, pools=_greedy_pools(tiny_model))
    results = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    vector = stages.skill_vectors(tiny_model, corpora, config)["general"]
    for name in bs.EVAL_SETS:
        docs = stages.eval_documents(tiny_model, corpora.valid[name].texts(), config)
        ref = next_token_accuracy(tiny_model, docs.sequences, None, k=10, batch_size=1)
        cell = results["cells"][str(BaselineKey())][name]
        assert cell["top1_docs"] == ref.top1.tolist() and cell["topk_docs"] == ref.topk.tolist()
        assert cell["n_tokens"] == int(ref.tokens.sum())
        steered = next_token_accuracy(tiny_model, docs.sequences, single(vector, 1, 30.0),
                                      k=10, batch_size=1)
        swept = results["cells"][str(SweepKey("general", 1, 30.0))][name]
        assert swept["topk_docs"] == steered.topk.tolist()
        assert swept["top1_docs"] == steered.top1.tolist()
    text = results["cells"][str(BaselineKey())]["text"]
    assert sum(text["top1_docs"]) >= 10  # real hits, so the comparisons above can fail
    assert results["cells"][str(SweepKey("general", 1, 30.0))]["text"]["top1_docs"] != (
        text["top1_docs"])  # and the steering changed them
    assert results["language_mix"]["valid"]["code"] == corpora.valid["code"].languages()
    assert (Path(config.out_dir) / "vectors" / "general.safetensors").is_file()
    # a random model scores (almost) nothing: undefined relative accuracies still report
    assert "general" in bs.summary_table(results)
    assert len(bs.write_figures(results, tmp_path / "figs")) == 2


class CountingSweep:
    """Counts scoring calls and passes them on to the real engine (optionally failing
    after ``fail_after`` calls, like a crash half-way)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, int, float]] = []
        self.fail_after = fail_after

    def __call__(self, model: Any, documents: Documents, plans: Any, **kwargs: Any) -> Any:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("boom")
        for plan in plans:
            first = plan.injections[0] if plan.injections else None
            self.calls.append(("", -1, 0.0) if first is None else
                              (first.label, first.layer, first.coefficient))
        return accuracy_sweep(model, documents, plans, **kwargs)


def test_resume_skips_finished_cells_and_vectors(tiny_model: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    corpora = _toy_corpora(config)
    first = CountingSweep()
    monkeypatch.setattr(stages, "accuracy_sweep", first)
    results = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    assert first.calls
    again = CountingSweep()
    means: list[int] = []
    monkeypatch.setattr(stages, "accuracy_sweep", again)
    monkeypatch.setattr(stages, "corpus_mean", lambda *a, **k: means.append(1))
    resumed = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    assert again.calls == [], "a finished cell was recomputed"
    assert means == [], "vectors were re-extracted instead of loaded"
    assert resumed["cells"] == results["cells"]
    assert resumed["headline"].keys() == {f"{v}/L{layer}" for v in config.vectors
                                          for layer in (1, 2)}


def test_other_documents_never_resume_old_cells_or_vectors(tiny_model: Any, tmp_path: Path
                                                           ) -> None:
    config = _config(tmp_path, vectors=("general",), layers=(1,), coefficients=(0.0, 1.0))
    bs.run(config, model=tiny_model, progress=False, corpora=_toy_corpora(config))
    text, code, python = _toy_pools(14)  # same config, more documents to choose from
    other = build_corpora(config, pools=(text, code, python))
    assert other.fingerprint() != _toy_corpora(config).fingerprint()
    with pytest.raises(ResultConfigMismatchError, match=r"corpora.*another output folder"):
        bs.run(config, model=tiny_model, progress=False, corpora=other)
    # Starting the results afresh must not reuse vectors of the old documents either.
    means: list[str] = []
    real = stages.corpus_mean

    def spy(model: Any, texts: Any, **kwargs: Any) -> Any:
        means.append("mean")
        return real(model, texts, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "corpus_mean", spy)
        bs.run(config, model=tiny_model, progress=False, corpora=other, overwrite=True)
    assert means, "vectors from other documents were reused"


class Crashing(LocalExecutor):
    """Runs units here and stops like a crash before unit number ``fail_after``."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after, self.ran = fail_after, 0

    def map(self, units):
        for work in units:
            if self.ran >= self.fail_after:
                raise RuntimeError("boom")
            self.ran += 1
            yield from super().map([work])


def test_crash_keeps_finished_cells(tiny_model: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, stop_below=0.0, vectors=("general", "python"))
    corpora = build_corpora(config, pools=_greedy_pools(tiny_model))
    with pytest.raises(RuntimeError, match="boom"):  # baseline (3 sets), one sweep, crash
        bs.run(config, model=tiny_model, progress=False, corpora=corpora,
               executor=Crashing(fail_after=3 + 1))
    with ResultStore(Path(config.out_dir) / bs.RESULTS_FILE,
                     config={**config.results_config(), "corpora": corpora.fingerprint()}
                     ) as store:
        done = [key for key in store.cells if key.startswith("sweep/")]
        assert len(done) == 3 and store.has(str(BaselineKey()))  # one sweep's cells
        finished = [(store.get(k)["vector"], store.get(k)["layer"], store.get(k)["coefficient"])
                    for k in done]
    resumed = CountingSweep()
    monkeypatch.setattr(stages, "accuracy_sweep", resumed)
    results = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    assert resumed.calls and not set(finished) & set(resumed.calls)
    assert len([k for k in results["cells"] if k.startswith("sweep/")]) == 2 * 2 * 3


def test_shards_merged_equal_one_run(tiny_model: Any, tiny_bridge: Any, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard extracts its own vectors, as shards on other machines do; the second on
    the bridge backend (on TransformerLens 3 the other backend: the same weights, other
    float rounding in the vectors and their norms)."""
    config = _config(tmp_path / "one", coefficients=(0.0, 0.05, 0.1, 1.0, 4.0),
                     stop_below=0.3)
    corpora = build_corpora(config, pools=_greedy_pools(tiny_model))
    whole = bs.run(config, model=tiny_model, progress=False, corpora=corpora)
    logs, norms = [], []
    for index, model in enumerate((tiny_model, tiny_bridge)):
        shard = replace(config, out_dir=str(tmp_path / f"shard{index}"))
        assert not (tmp_path / f"shard{index}" / "vectors").exists()
        part = bs.run(shard, model=model, progress=False, corpora=corpora,
                      shard=Shard(index, 2))
        assert "headline" not in part and any(k.startswith("sweep/") for k in part["cells"])
        logs.append(Path(part["path"]))
        norms.append(read_results(part["path"], needs=("vector_norms",))["vector_norms"])
    merged = tmp_path / "merged" / bs.RESULTS_FILE
    merge_results(logs, merged)
    spy = CountingSweep()
    monkeypatch.setattr(stages, "accuracy_sweep", spy)
    finished = bs.run(replace(config, out_dir=str(merged.parent)), model=tiny_model,
                      progress=False, corpora=corpora)
    assert spy.calls == []  # the shards did every sweep
    sweeps = [k for k in whole["cells"] if k.startswith("sweep/")]
    per_sweep = {len([k for k in sweeps if k.startswith(f"sweep/vector={v}/layer={x}/")])
                 for v in config.vectors for x in (1, 2)}
    assert max(per_sweep) < len(config.coefficients) - 1  # the sweeps stopped early

    def timeless(cells: dict[str, Any]) -> dict[str, Any]:
        # plan_id hashes the vector's bytes, which differ between the shards' extractions
        return {k: {f: v for f, v in c.items() if f not in ("seconds", "plan_id")}
                for k, c in cells.items()}

    assert timeless(finished["cells"]) == timeless(whole["cells"])
    assert finished["headline"] == whole["headline"]


def test_held_out_whitespace_variant_is_dropped_from_training() -> None:
    a = Document("def f():\n    return 1", "python", "x")
    b = Document("def f():\n    return 1\n", "python", "y")
    assert len(_drop(Corpus("code", (b,)), {a.content_key})) == 0


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.mark.slow
def test_general_vector_hurts_code_more_than_text(smol: Any, tmp_path: Path) -> None:
    config = bs.profile("quick", n_train=24, n_valid=12, max_tokens=96, layers=(14,),
                        coefficients=(0.0, 1.0, 2.0), vectors=("general",),
                        n_resamples=100, out_dir=str(tmp_path / "smol"))
    results = bs.run(config, model=smol, progress=False)
    gaps = []
    for c in config.coefficients[1:]:
        cell = results["cells"].get(str(SweepKey("general", 14, c)))
        if cell is not None:
            gaps.append(cell["text"]["rel_top1"]["value"] - cell["code"]["rel_top1"]["value"])
    assert gaps and max(gaps) > 0.05, gaps


def test_controls_follow_a_layer_override_and_must_be_swept_layers() -> None:
    assert bs.profile("quick").control_layers == (14,)
    assert bs.profile("quick", layers=(5, 9)).control_layers == (9,)
    assert bs.profile("quick", layers=(9, 14, 20)).control_layers == (14,)
    config = bs.profile("quick", layers=(5, 9))
    assert stages.is_swept(config, "general_permuted", 9)
    assert not stages.is_swept(config, "general_permuted", 5)
    with pytest.raises(ConfigError, match=r"control_layers=\(14,\) is invalid.*subset"):
        bs.profile("quick", layers=(5, 9), control_layers=(14,))
