"""Tokenising and padding: BOS handling (one, never two)."""

from __future__ import annotations

import pytest

from actsteer.batching import encode, encode_many


@pytest.mark.parametrize("bos", [True, False])
def test_text_starting_with_bos_never_gets_a_second(tiny_model, bos: bool) -> None:
    tokenizer = tiny_model.tokenizer
    plain = encode(tiny_model, "Hello there", bos=bos)
    assert (plain[0] == tokenizer.bos_token_id) == bos
    # A rendered chat template (Llama 2's starts with <s>) already carries its BOS.
    templated = encode(tiny_model, tokenizer.bos_token + "Hello there", bos=bos)
    assert templated[0] == tokenizer.bos_token_id and templated[1] != tokenizer.bos_token_id
    assert templated == [tokenizer.bos_token_id, *encode(tiny_model, "Hello there", bos=False)]
    batch = encode_many(tiny_model, ["Hello there", tokenizer.bos_token + "Hello there"],
                        bos=bos)
    assert batch == [plain, templated]
