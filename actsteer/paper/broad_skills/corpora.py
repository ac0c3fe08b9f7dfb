"""The broad-skills corpora: text, general code and Python, split into disjoint training
and validation documents (offline from files on this machine, or the paper's Hub streams)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actsteer.data.corpora import (
    PYTHON,
    TEXT,
    Corpus,
    code_corpus,
    codeparrot_corpus,
    non_python_code,
    pile_github_corpus,
    pile_text_corpus,
    python_stdlib_corpus,
    text_corpus,
)
from actsteer.errors import InvalidValueError
from actsteer.paper.broad_skills.config import BroadSkillsConfig


@dataclass(frozen=True)
class SkillCorpora:
    """Training corpora of the three means and the three evaluation sets."""

    train: Mapping[str, Corpus]
    """``text``, ``code`` (general code, Python included) and ``python``."""
    valid: Mapping[str, Corpus]
    """``text``, ``code`` (non-Python code) and ``python``."""

    def language_mix(self) -> dict[str, dict[str, dict[str, int]]]:
        return {"train": {k: c.languages() for k, c in self.train.items()},
                "valid": {k: c.languages() for k, c in self.valid.items()}}

    def fingerprint(self) -> str:
        """SHA-1 of every document id per split and corpus: equal exactly when the same
        documents were chosen. Stored with results and vectors so that a resumed run never
        mixes cells (or reuses vectors) computed on other documents."""
        digest = hashlib.sha1()
        for split, pools in (("train", self.train), ("valid", self.valid)):
            for name in sorted(pools):
                ids = sorted(d.doc_id for d in pools[name].documents)
                digest.update(f"{split}/{name}:{','.join(ids)};".encode())
        return digest.hexdigest()


def _drop(corpus: Corpus, keys: set[str]) -> Corpus:
    """``corpus`` without the documents whose :attr:`Document.content_key` is in ``keys``."""
    return Corpus(corpus.name, tuple(d for d in corpus if d.content_key not in keys))


def _offline_pools(config: BroadSkillsConfig) -> tuple[Corpus, Corpus, Corpus]:
    text = text_corpus(config.text_path)
    kwargs: dict[str, Any] = {"max_per_language": config.max_per_language}
    if config.code_globs is not None:
        kwargs["globs"] = config.code_globs
    code = code_corpus(config.code_roots, **kwargs)
    return text, code, python_stdlib_corpus()


def _hub_pools(config: BroadSkillsConfig) -> tuple[Corpus, Corpus, Corpus]:
    n = config.n_train + config.n_valid
    return (pile_text_corpus(n, seed=config.seed), pile_github_corpus(n, seed=config.seed),
            codeparrot_corpus(n, seed=config.seed))


def build_corpora(config: BroadSkillsConfig,
                  pools: tuple[Corpus, Corpus, Corpus] | None = None) -> SkillCorpora:
    """Split text, general code and Python into disjoint train/validation sets.

    ``pools`` (text, code, python) replaces the configured sources (for tests). The
    Python validation documents are removed from the general-code pool first (offline,
    both read the standard library), so no evaluated document is ever in a training
    set. All code documents not used for training are validation candidates; the
    ``code`` evaluation set keeps the first ``n_valid`` of them that are not Python
    (Hub code has no language labels: there, every candidate counts as non-Python).
    """
    if pools is None:
        pools = _hub_pools(config) if config.source == "hub" else _offline_pools(config)
    text_pool, code_pool, python_pool = pools
    text = text_pool.split(config.n_train, config.n_valid, seed=config.seed)
    python = python_pool.split(config.n_train, config.n_valid, seed=config.seed)
    held_out = {d.content_key for d in python.valid} | {d.content_key for d in text.valid}
    code_pool = _drop(code_pool.deduplicated(), held_out)
    if len(code_pool) <= config.n_train:
        raise InvalidValueError(
            f"the general-code corpus has {len(code_pool)} distinct documents; it needs more "
            f"than n_train={config.n_train} to leave validation documents (raise "
            "max_per_language, add code_roots or lower n_train)")
    code = code_pool.split(config.n_train, len(code_pool) - config.n_train, seed=config.seed)
    code_valid = non_python_code(code.valid)
    if len(code_valid) < config.n_valid:
        raise InvalidValueError(
            f"only {len(code_valid)} non-Python code documents are left for validation, "
            f"n_valid={config.n_valid} needed; "
            + ("raise max_per_language or lower n_valid" if config.source == "offline"
            else "lower n_valid, or n_train to leave more of the streamed documents"))
    code_valid = code_valid.take(config.n_valid)
    train = {TEXT: text.train, "code": code.train, PYTHON: python.train}
    valid = {TEXT: text.valid, "code": code_valid, PYTHON: python.valid}
    return SkillCorpora(train, valid)
