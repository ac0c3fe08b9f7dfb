"""Batched steered generation equals one prompt at a time, token for token."""

from __future__ import annotations

import pytest
import torch

from actsteer import Positions, single, steer
from actsteer.batching import encode, encode_many
from actsteer.generation import generate, generate_tokens
from actsteer.prompts import chat_prompt

PROMPTS = ["The weather", "Once upon a time there was a small", "a", "def f(x): return",
           "Hello, my name is Bob and I live in a house by the", "1 2 3",
           "What is the capital of France?", "zz top ten"]
MODES = ["all", "prompt", "generated", "from"]


def _hooks(model) -> int:
    points = {id(point): point for point in model.hook_dict.values()}  # bridge has aliases
    return sum(len(point.fwd_hooks) for point in points.values()) + len(model._forward_pre_hooks)


def _plan(model, mode):
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    return single(vector, 1, 2.0, positions=Positions(mode, 2))


@pytest.mark.parametrize("mode", MODES)
def test_batched_greedy_equals_one_at_a_time(tiny_any, mode):
    """8 prompts of different lengths x 30 greedy tokens, against each prompt alone
    without a KV cache (every step re-runs the whole unpadded sequence)."""
    sequences = encode_many(tiny_any, PROMPTS)
    assert len({len(s) for s in sequences}) == len(PROMPTS)
    plan = _plan(tiny_any, mode)
    batched = generate_tokens(tiny_any, sequences, plan, max_new_tokens=30, stop_at_eos=False)
    assert all(len(row) == 30 for row in batched)
    for sequence, row in zip(sequences, batched, strict=True):
        alone = generate_tokens(tiny_any, [sequence], plan, max_new_tokens=30,
                                stop_at_eos=False, use_cache=False)[0]
        assert row == alone
    assert batched == generate_tokens(tiny_any, sequences, plan, max_new_tokens=30,
                                      stop_at_eos=False, use_cache=False)
    unsteered = generate_tokens(tiny_any, sequences, None, max_new_tokens=30, stop_at_eos=False)
    assert batched != unsteered


def test_generated_positions_start_after_each_prompt(tiny_any):
    """Under ``generated`` the first new token comes from the unsteered prompt; under
    ``prompt`` the steering stops there (checked against a one-column plan run)."""
    sequences = encode_many(tiny_any, PROMPTS)
    base = generate_tokens(tiny_any, sequences, None, max_new_tokens=4, stop_at_eos=False)
    late = generate_tokens(tiny_any, sequences, _plan(tiny_any, "generated"), max_new_tokens=4,
                           stop_at_eos=False)
    assert [row[0] for row in late] == [row[0] for row in base]
    assert late != base
    everywhere = generate_tokens(tiny_any, sequences, _plan(tiny_any, "all"),
                                 max_new_tokens=1, stop_at_eos=False)
    early = generate_tokens(tiny_any, sequences, _plan(tiny_any, "prompt"), max_new_tokens=1,
                            stop_at_eos=False)
    assert early == everywhere  # the first token sees only prompt positions


def test_matches_transformer_lens_generate(tiny_any):
    """An independent loop: TransformerLens's own generate with the hooks live."""
    plan = _plan(tiny_any, "from")
    for prompt in PROMPTS[:3]:
        tokens = torch.tensor([encode(tiny_any, prompt)])
        with torch.no_grad(), steer(tiny_any, plan) as handle:
            handle.new_prompt()
            theirs = tiny_any.generate(tokens, max_new_tokens=12, do_sample=False,
                                       stop_at_eos=False, verbose=False)
        ours = generate_tokens(tiny_any, [tokens[0].tolist()], plan, max_new_tokens=12,
                               stop_at_eos=False)[0]
        assert ours == theirs[0, tokens.shape[1]:].tolist()


def test_text_in_text_out(tiny_model):
    plan = _plan(tiny_model, "all")
    ids = generate_tokens(tiny_model, encode_many(tiny_model, PROMPTS[:2]), plan,
                          max_new_tokens=5, stop_at_eos=False)
    texts = generate(tiny_model, PROMPTS[:2], plan, max_new_tokens=5, stop_at_eos=False)
    assert texts == [tiny_model.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    single_text = generate(tiny_model, PROMPTS[0], plan, max_new_tokens=5, stop_at_eos=False)
    assert isinstance(single_text, str) and single_text == texts[0]


def test_sampling_is_seeded_per_prompt(tiny_model):
    sequences = encode_many(tiny_model, PROMPTS)
    plan = _plan(tiny_model, "all")
    kwargs = {"max_new_tokens": 12, "stop_at_eos": False, "do_sample": True, "top_k": 50,
              "top_p": 0.95, "temperature": 1.5}
    first = generate_tokens(tiny_model, sequences, plan, seed=7, **kwargs)
    assert first == generate_tokens(tiny_model, sequences, plan, seed=7, **kwargs)
    assert first != generate_tokens(tiny_model, sequences, plan, seed=8, **kwargs)
    greedy = generate_tokens(tiny_model, sequences, plan, max_new_tokens=12, stop_at_eos=False)
    assert first != greedy
    for index in (0, 5):  # prompt i draws from seed + i, whatever shares its batch
        alone = generate_tokens(tiny_model, [sequences[index]], plan, seed=7 + index, **kwargs)
        assert alone[0] == first[index]
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}):
        sampled = generate_tokens(tiny_model, sequences, plan, max_new_tokens=12,
                                  stop_at_eos=False, do_sample=True, seed=1, **narrow)
        assert sampled == greedy


def test_rows_stop_at_their_own_end_token(tiny_model):
    sequences = encode_many(tiny_model, PROMPTS)
    full = generate_tokens(tiny_model, sequences, None, max_new_tokens=10, stop_at_eos=False)
    end = full[3][4]
    stopped = generate_tokens(tiny_model, sequences, None, max_new_tokens=10, eos_token_id=end)
    for row, tokens in zip(full, stopped, strict=True):
        cut = row.index(end) + 1 if end in row else len(row)
        assert tokens == row[:cut]
    assert len(stopped[3]) <= 5


def test_leaves_no_hooks_and_rejects_bad_arguments(tiny_any):
    before = _hooks(tiny_any)
    generate(tiny_any, PROMPTS[:2], _plan(tiny_any, "from"), max_new_tokens=2)
    assert _hooks(tiny_any) == before
    cases = [({"max_new_tokens": -1}, ValueError, "max_new_tokens"),
             ({"do_sample": True, "temperature": 0.0}, ValueError, "temperature"),
             ({"do_sample": True, "top_p": 0.0}, ValueError, "top_p"),
             ({"do_sample": True, "top_k": 0}, ValueError, "top_k"),
             ({"batch_size": 0}, ValueError, "batch_size")]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            generate(tiny_any, "hello", None, **kwargs)
    with pytest.raises(ValueError, match="no prompts"):
        generate(tiny_any, [], None)
    with pytest.raises(TypeError, match="HookedTransformer or a TransformerBridge"):
        generate_tokens(torch.nn.Linear(2, 2), [[1, 2]], None)
    assert generate(tiny_any, PROMPTS[:2], None, max_new_tokens=0) == ["", ""]


def test_batch_size_groups_do_not_change_results(tiny_model):
    sequences = encode_many(tiny_model, PROMPTS)
    plan = _plan(tiny_model, "from")
    together = generate_tokens(tiny_model, sequences, plan, max_new_tokens=8, stop_at_eos=False)
    assert together == generate_tokens(tiny_model, sequences, plan, max_new_tokens=8,
                                       stop_at_eos=False, batch_size=3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_smol_batched_equals_one_at_a_time(smol, smol_bridge, backend):
    model = smol if backend == "hooked" else smol_bridge
    prompts = [chat_prompt(model.tokenizer, q) for q in
               ("What is the capital of France?", "Name a colour.",
                "Tell me about money in one sentence, please.")]
    sequences = encode_many(model, prompts)
    vector = torch.randn(576, generator=torch.Generator().manual_seed(0)) * 6
    plan = single(vector, 10, 1.0, positions=Positions("from", 3))
    batched = generate_tokens(model, sequences, plan, max_new_tokens=10, stop_at_eos=False)
    for sequence, row in zip(sequences, batched, strict=True):
        assert row == generate_tokens(model, [sequence], plan, max_new_tokens=10,
                                      stop_at_eos=False)[0]
    assert batched != generate_tokens(model, sequences, None, max_new_tokens=10,
                                      stop_at_eos=False)
