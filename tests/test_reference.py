"""actsteer's resid_post steering equals the paper's method on plain transformers.

The paper adds a vector to the output of one decoder block of the Hugging Face Llama model
at every position. The reference below does exactly that with a forward hook on
``model.model.layers[L]``, written here from that description.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

import actsteer
from actsteer import run, single
from actsteer.batching import encode, pad


@contextlib.contextmanager
def block_output_addition(hf_model, layer: int, vector: torch.Tensor) -> Iterator[None]:
    """Reference: add ``vector`` to decoder block ``layer``'s output hidden states."""

    def add(module, inputs, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    handle = hf_model.model.layers[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _compare(model, hf_model, layer, vector, texts, atol):
    batch = pad(model, [encode(model, t) for t in texts], padding_side="right")
    ours = run(model, batch, single(vector, layer, 1.0))
    with torch.no_grad(), block_output_addition(hf_model, layer, vector):
        theirs = hf_model(batch.tokens, attention_mask=batch.attention_mask).logits
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(_centred(ours)[mask], _centred(theirs)[mask], atol=atol, rtol=0)
    unsteered = run(model, batch)
    assert (_centred(unsteered) - _centred(ours))[mask].abs().max() > 100 * atol


TEXTS = ["Human:\nWould you like $5 now or $50 next week?\n\nAI:\nOut of (A) and (B), I choose (",
         "The capital of France is"]


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_tiny_matches_reference(tiny_folder, backend):
    from transformers import AutoModelForCausalLM

    model = actsteer.load_model(tiny_folder, backend=backend)
    hf_model = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 20
    _compare(model, hf_model, 2, vector, TEXTS, atol=1e-3)


@pytest.mark.slow
def test_embedded_matches_reference(smol):
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(actsteer.models.embedded_model_path()).eval()
    vector = torch.randn(576, generator=torch.Generator().manual_seed(1)) * 8
    _compare(smol, hf_model, 15, vector, TEXTS, atol=1e-3)
