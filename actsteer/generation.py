"""Steered text generation: many prompts in one left-padded, KV-cached batch.

:func:`generate` runs every prompt of a batch through the model once, then one forward
pass per new token over the KV cache, with the plan's hooks live the whole time (via
:func:`actsteer.steer`, which tells the prompt's positions from generated ones and reads
each row's first real token from the attention mask). Rows are independent: padding is
masked and position ids are counted from each row's first real token, so a prompt's greedy
continuation is the same token for token whether it runs alone or in a batch.

Both backends: on ``TransformerBridge`` the loop drives the wrapped Hugging Face model's
own KV cache, through its plain view where the bridge runs on that model's own weights
(:mod:`actsteer.plain_decoding`: the speed of ``transformers`` ``generate``), else through
the bridge's components; ``HookedTransformer`` uses TransformerLens's
``TransformerLensKeyValueCache``, which re-rotates cached keys at every step and is several
times slower.

Example::

    plan = actsteer.single(vector, layer=12, coefficient=4.0)
    texts = actsteer.generate(model, ["Tell me about money", "Hello"], plan, max_new_tokens=40)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import encode_many, length_batches, pad, pad_id
from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.executor import register_task
from actsteer.models.info import backend_of
from actsteer.plain_decoding import plain_decoder
from actsteer.plan import SteeringPlan
from actsteer.steering import steer

__all__ = ["Sampling", "generate", "generate_tokens"]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. Greedy (argmax) unless ``do_sample``.

    Sampled tokens are drawn from ``softmax(logits / temperature)`` restricted to the
    ``top_k`` most likely tokens and then to the smallest set whose probability reaches
    ``top_p``. With a ``seed``, prompt ``i`` (its index in the call) draws from its own
    generator seeded ``seed + i``: its text is reproducible and does not depend on which
    other prompts share its batch. Without one, torch's global generator is used.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise InvalidValueError(f"temperature must be > 0, got {self.temperature}; use "
                                    "do_sample=False for greedy decoding")
        if self.top_k is not None and self.top_k < 1:
            raise InvalidValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if not self.do_sample and (self.temperature != 1.0 or self.top_k is not None
                                   or self.top_p is not None):
            warnings.warn("temperature, top_k and top_p only apply with do_sample=True; "
                          "decoding greedily", stacklevel=3)

    def choose(self, logits: Float[Tensor, "batch d_vocab"],
               generators: Sequence[torch.Generator] | None) -> Int[Tensor, " batch"]:
        """The next token of each row."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        scores = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # Keep a token while the mass of the tokens ranked above it is below top_p.
            drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = scores.softmax(dim=-1)
        if generators is None:
            return torch.multinomial(probs, 1)[:, 0]
        return torch.cat([torch.multinomial(probs[row], 1, generator=generator)
                          for row, generator in enumerate(generators)])


class _Decoder(Protocol):
    def steering(self, plan: SteeringPlan) -> contextlib.AbstractContextManager[Any]: ...

    def start(self, tokens: Tensor, mask: Tensor) -> Tensor: ...

    def step(self, tokens: Tensor) -> Tensor: ...


class _HookedDecoder:
    """HookedTransformer over TransformerLens's KV cache (or no cache: the reference)."""

    def __init__(self, model: Any, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache: Any = None
        self.tokens = self.mask = torch.empty(0)

    def _last_logits(self, resid: Tensor) -> Tensor:
        # The prompt's other positions need no vocabulary-wide logits.
        from transformer_lens.utilities import apply_softcap

        last = resid[:, -1:]
        if self.model.cfg.normalization_type is not None:
            last = self.model.ln_final(last)
        logits = apply_softcap(self.model.unembed(last), self.model.cfg.output_logits_soft_cap)
        return logits[:, -1]

    def _forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        resid = self.model(tokens, attention_mask=mask, past_kv_cache=self.cache,
                           stop_at_layer=self.model.cfg.n_layers)
        return self._last_logits(resid)

    def steering(self, plan: SteeringPlan) -> contextlib.AbstractContextManager[Any]:
        return steer(self.model, plan)

    def start(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.use_cache:
            from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

            self.cache = TransformerLensKeyValueCache.init_cache(
                self.model.cfg, self.model.cfg.device, tokens.shape[0])
        self.tokens, self.mask = tokens, mask
        return self._forward(tokens, mask)

    def step(self, tokens: Tensor) -> Tensor:
        ones = torch.ones_like(tokens)
        self.tokens = torch.cat([self.tokens, tokens], dim=1)
        self.mask = torch.cat([self.mask, ones], dim=1)
        if self.use_cache:
            return self._forward(tokens, ones)
        return self._forward(self.tokens, self.mask)


class _BridgeDecoder:
    """TransformerBridge over the wrapped Hugging Face model's own KV cache. The bridge
    derives each new token's position id from the full attention mask."""

    def __init__(self, model: Any, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache: Any = None
        self.tokens = self.mask = torch.empty(0)

    def _forward(self, tokens: Tensor) -> Tensor:
        if not self.use_cache:
            logits = self.model(tokens, attention_mask=self.mask, logits_to_keep=1)
            return logits[:, -1]  # type: ignore[no-any-return]
        extra = {} if self.cache is None else {"past_key_values": self.cache}
        with warnings.catch_warnings():
            # TransformerBridge takes the cache as past_key_values (its documented argument)
            # and hands it on under that name, which transformers >= 5.25 deprecates with a
            # FutureWarning on every step; the warning is TransformerLens's to act on.
            warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated",
                                    category=FutureWarning)
            logits, self.cache = self.model(tokens, attention_mask=self.mask, use_cache=True,
                                            logits_to_keep=1, return_type="logits_and_cache",
                                            **extra)
        return logits[:, -1]  # type: ignore[no-any-return]

    def steering(self, plan: SteeringPlan) -> contextlib.AbstractContextManager[Any]:
        return steer(self.model, plan)

    def start(self, tokens: Tensor, mask: Tensor) -> Tensor:
        self.tokens, self.mask, self.cache = tokens, mask, None
        return self._forward(tokens)

    def step(self, tokens: Tensor) -> Tensor:
        self.tokens = torch.cat([self.tokens, tokens], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        return self._forward(tokens if self.use_cache else self.tokens)


def _decoder(model: Any, use_cache: bool, plan: SteeringPlan | None = None) -> _Decoder:
    if backend_of(model) == "hooked":
        return _HookedDecoder(model, use_cache)
    plain = plain_decoder(model, plan) if use_cache else None
    return plain if plain is not None else _BridgeDecoder(model, use_cache)


def _stop_ids(model: Any, stop_at_eos: bool, eos_token_id: int | Sequence[int] | None
              ) -> Tensor | None:
    if not stop_at_eos:
        return None
    if eos_token_id is None:
        eos_token_id = model.tokenizer.eos_token_id
        if eos_token_id is None:
            raise InvalidValueError("the tokenizer has no eos_token_id; pass eos_token_id= or "
                                    "stop_at_eos=False")
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=model.cfg.device)


def _generate_batch(model: Any, sequences: Sequence[Sequence[int]], plan: SteeringPlan | None,
                    max_new_tokens: int, sampling: Sampling,
                    generators: Sequence[torch.Generator] | None, stop: Tensor | None,
                    use_cache: bool) -> list[list[int]]:
    batch = pad(model, sequences, padding_side="left")
    decoder = _decoder(model, use_cache, plan)
    filler = pad_id(model)
    rows = len(sequences)
    new = torch.empty((rows, 0), dtype=torch.long, device=batch.tokens.device)
    done = torch.zeros(rows, dtype=torch.bool, device=batch.tokens.device)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        if plan is not None and plan.injections:
            stack.enter_context(decoder.steering(plan)).new_prompt(batch.starts)
        logits = decoder.start(batch.tokens, batch.attention_mask)
        for index in range(max_new_tokens):
            chosen = sampling.choose(logits, generators).to(new.device)
            chosen = torch.where(done, torch.full_like(chosen, filler), chosen)
            new = torch.cat([new, chosen[:, None]], dim=1)
            if stop is not None:
                done = done | torch.isin(chosen, stop)
            if bool(done.all()) or index == max_new_tokens - 1:
                break
            logits = decoder.step(chosen[:, None])
    stops = set(stop.tolist()) if stop is not None else set()
    out = []
    for row in range(rows):
        ids = [int(t) for t in new[row]]
        ends = [i for i, t in enumerate(ids) if t in stops]
        out.append(ids[: ends[0] + 1] if ends else ids)
    return out


def generate_tokens(
    model: Any,
    sequences: Sequence[Sequence[int]],
    plan: SteeringPlan | None = None,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """New token ids for each token sequence (see :func:`generate` for the arguments);
    a row that stops at an end-of-sequence token keeps that token as its last."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise InvalidValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not sequences:
        raise InvalidValueError("no prompts given; pass at least one")
    if batch_size is not None and batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    backend_of(model)  # refuses an unsupported model before any other work
    sampling = Sampling(do_sample, temperature, top_k, top_p, seed)
    stop = _stop_ids(model, stop_at_eos, eos_token_id)
    if max_new_tokens == 0:
        return [[] for _ in sequences]
    out: list[list[int]] = [[] for _ in sequences]
    groups = length_batches([len(s) for s in sequences], batch_size or len(sequences))
    for group in groups:
        generators = None
        if do_sample and seed is not None:
            device = torch.device(model.cfg.device or "cpu")
            generators = [torch.Generator(device=device).manual_seed(seed + i) for i in group]
        texts = _generate_batch(model, [sequences[i] for i in group], plan, max_new_tokens,
                                sampling, generators, stop, use_cache)
        for i, ids in zip(group, texts, strict=True):
            out[i] = ids
    return out


@overload
def generate(model: Any, prompts: str, plan: SteeringPlan | None = None, *,
             max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_at_eos: bool = True, eos_token_id: int | Sequence[int] | None = None,
             batch_size: int | None = None, use_cache: bool = True) -> str: ...


@overload
def generate(model: Any, prompts: Sequence[str], plan: SteeringPlan | None = None, *,
             max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_at_eos: bool = True, eos_token_id: int | Sequence[int] | None = None,
             batch_size: int | None = None, use_cache: bool = True) -> list[str]: ...


def generate(
    model: Any,
    prompts: str | Sequence[str],
    plan: SteeringPlan | None = None,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
) -> str | list[str]:
    """Continue each prompt under ``plan`` and return only the new text.

    Args:
        model: a HookedTransformer or TransformerBridge (:func:`actsteer.load_model`).
        prompts: one prompt (returns a ``str``) or several (returns one ``str`` each, in
            order). Prompts are tokenised as :func:`actsteer.batching.encode` does (BOS added when
            the model expects it; apply a chat template yourself, e.g.
            :func:`actsteer.chat_prompt`).
        plan: what to add, where; ``None`` or an empty plan generates unsteered. Every
            :class:`~actsteer.plan.Positions` mode works per row: ``prompt``/``generated``
            split at the end of the prompts, ``from`` counts from each row's first token.
        max_new_tokens: tokens to add to each prompt (fewer where a row stops at EOS).
        do_sample, temperature, top_k, top_p, seed: see :class:`Sampling`; the default
            is greedy decoding.
        stop_at_eos: end a row at ``eos_token_id`` (default the tokenizer's).
        batch_size: prompts per forward pass (default all); similar lengths are grouped.
        use_cache: ``False`` re-runs the whole sequence at every step (slow; a reference
            that the KV-cached loop is checked against).

    Example:
        >>> plan = actsteer.single(vector, 12, -4.0, positions=actsteer.Positions("generated"))
        >>> actsteer.generate(model, ["Tell me about money", "Hi"], plan, max_new_tokens=20)
        ['...', '...']
    """
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if any(not isinstance(text, str) for text in texts):
        raise InvalidTypeError("prompts must be a str or a list of str; for token ids use "
                               "actsteer.generation.generate_tokens")
    ids = generate_tokens(model, encode_many(model, texts) if texts else [], plan,
                          max_new_tokens=max_new_tokens, do_sample=do_sample,
                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop_at_eos=stop_at_eos, eos_token_id=eos_token_id,
                          batch_size=batch_size, use_cache=use_cache)
    decoded = [str(model.tokenizer.decode(row, skip_special_tokens=True)) for row in ids]
    return decoded[0] if isinstance(prompts, str) else decoded


@register_task("generate")
def _generate_task(model: Any, payload: Mapping[str, Any]) -> list[str]:
    """Greedy :func:`generate` of ``prompts`` under ``plan``: the continuations."""
    return generate(model, list(payload["prompts"]), payload["plan"],
                    max_new_tokens=payload["max_new_tokens"],
                    stop_at_eos=payload.get("stop_at_eos", True))
