"""Prompt formats: the paper's raw Human/AI format, Llama 2's ``[INST]`` and chat templates.

The paper (following CAA) writes A/B items as raw text with no chat template::

    Human:\\n{question}\\n\\nAI:\\nOut of (A) and (B), I choose (

so the next token is the answer letter. :func:`chat_prompt` renders the same question
through the model's own chat template instead, which instruction-tuned models may follow
more reliably.
"""

from __future__ import annotations

from typing import Any, Literal

PromptFormat = Literal["paper", "chat"]

_ANSWER_STEMS = {
    "AB": "Out of (A) and (B), I choose (",
    "YesNo": "Out of (Yes) and (No), I choose (",
}


def answer_stem(kind: str) -> str:
    """The text that makes the next token an answer: ``"Out of (A) and (B), I choose ("``."""
    try:
        return _ANSWER_STEMS[kind]
    except KeyError:
        raise ValueError(f"unknown answer kind {kind!r}; use 'AB' or 'YesNo'") from None


def paper_prompt(question: str, kind: str = "AB") -> str:
    """The paper's raw format for an A/B (or Yes/No) item, ending right before the answer."""
    return f"Human:\n{question}\n\nAI:\n{answer_stem(kind)}"


def llama2_chat(message: str, system: str | None = None) -> str:
    """Llama 2 chat format ``[INST] <<SYS>>...<</SYS>> message [/INST]`` (no BOS; the
    tokenizer adds it)."""
    if system:
        return f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{message.strip()} [/INST]"
    return f"[INST] {message.strip()} [/INST]"


def chat_prompt(
    tokenizer: Any, message: str, *, system: str | None = None, assistant_prefix: str = ""
) -> str:
    """Render one user turn through the tokenizer's chat template, ready for the reply.

    ``assistant_prefix`` is appended after the generation prompt (e.g. the answer stem
    ``"Out of (A) and (B), I choose ("``), so the next token is the answer. Tokenizers
    without a template (Llama 2 base/chat on the Hub have none in some releases) fall back
    to :func:`llama2_chat`.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": message}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise TypeError(f"chat template returned {type(text).__name__}, expected str")
    else:
        text = llama2_chat(message, system) + " "
    return text + assistant_prefix


def format_item(
    question: str, kind: str, fmt: PromptFormat, tokenizer: Any | None = None
) -> str:
    """An A/B item in ``fmt``: ``"paper"`` (raw Human/AI) or ``"chat"`` (model template)."""
    if fmt == "paper":
        return paper_prompt(question, kind)
    if fmt == "chat":
        if tokenizer is None:
            raise ValueError("format 'chat' needs the model's tokenizer")
        return chat_prompt(tokenizer, question, assistant_prefix=answer_stem(kind))
    raise ValueError(f"unknown prompt format {fmt!r}; use 'paper' or 'chat'")
