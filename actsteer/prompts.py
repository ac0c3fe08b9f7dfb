"""Answer labels and prompt formats: the paper's raw Human/AI format and chat templates.

The paper (following CAA) writes A/B items as raw text with no chat template::

    Human:\\n{question}\\n\\nAI:\\nOut of (A) and (B), I choose (

so the next token is the answer label. An item that lists more choices gets a stem naming
all of them (``"Out of (A), (B), (C) and (D), I choose ("``); Yes/No items end
``"Out of (Yes) and (No), I choose ("``. :func:`chat_prompt` renders the same question
through the model's own chat template instead, which instruction-tuned models may follow
more reliably.

The answer labels are defined here, once: a capital letter ``"A"`` ... ``"Z"`` (kind
``"AB"``, lettered choices) or ``"Yes"``/``"No"`` (kind ``"YesNo"``).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias, cast

from actsteer.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "AB_ANSWERS",
    "LETTERS",
    "YESNO_ANSWERS",
    "AnswerKind",
    "Labels",
    "PromptFormat",
    "answer_labels",
    "answer_stem",
    "chat_prompt",
    "default_choices",
    "format_item",
    "label_kind",
    "listed_choices",
    "llama2_chat",
    "paper_prompt",
    "reply_lead",
]

logger = logging.getLogger(__name__)

PromptFormat = Literal["paper", "chat"]
AnswerKind = Literal["AB", "YesNo"]
"""``"AB"``: the answers are letters (``A`` ... ``Z``); ``"YesNo"``: ``Yes``/``No``."""

LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
"""Every letter an answer may use, ``"A"`` to ``"Z"``."""
AB_ANSWERS: tuple[str, str] = ("A", "B")
"""The default labels of a lettered item that lists no choices (and the paper's)."""
YESNO_ANSWERS: tuple[str, str] = ("Yes", "No")
"""The labels of a Yes/No item, in display order."""
DEFAULT_LABELS: dict[AnswerKind, tuple[str, str]] = {"AB": AB_ANSWERS, "YesNo": YESNO_ANSWERS}

Labels: TypeAlias = AnswerKind | Sequence[str]
"""An answer kind (its default pair of labels) or the labels themselves, in display order."""

_VALID = "a capital letter A-Z, 'Yes' or 'No'"


def label_kind(label: object) -> AnswerKind | None:
    """``"AB"`` for a letter ``"A"`` ... ``"Z"``, ``"YesNo"`` for ``"Yes"``/``"No"``,
    else ``None``."""
    if label in LETTERS:
        return "AB"
    if label in YESNO_ANSWERS:
        return "YesNo"
    return None


def answer_labels(labels: Labels) -> tuple[str, ...]:
    """Resolve ``labels`` to a checked tuple of answer labels.

    A string is an answer kind (``"AB"`` gives ``("A", "B")``, ``"YesNo"`` gives
    ``("Yes", "No")``); a sequence is taken as the labels, which must be at least two,
    distinct, and all letters or all Yes/No.

    Raises:
        ValueError: an unknown kind, or labels that break the rules above.

    Example:
        >>> answer_labels("AB"), answer_labels(["A", "B", "C"])
        (('A', 'B'), ('A', 'B', 'C'))
    """
    if isinstance(labels, str):
        if labels not in DEFAULT_LABELS:
            raise InvalidValueError(f"unknown answer kind {labels!r}; use 'AB', 'YesNo' or a "
                                    "tuple of labels such as ('A', 'B', 'C')")
        return DEFAULT_LABELS[cast(AnswerKind, labels)]
    out = tuple(labels)
    bad = [label for label in out if label_kind(label) is None]
    if bad:
        raise InvalidValueError(f"answer label {bad[0]!r} is not valid; use {_VALID}")
    if len(out) < 2 or len(set(out)) != len(out):
        raise InvalidValueError(f"answer labels {out} must be at least two distinct labels")
    if len({label_kind(label) for label in out}) > 1:
        raise InvalidValueError(f"answer labels {out} mix letters and Yes/No; use one kind")
    return out


def answer_stem(labels: Labels) -> str:
    """The text that makes the next token an answer.

    Two labels give the paper's stems exactly; more are listed with commas.

    Example:
        >>> answer_stem("AB")
        'Out of (A) and (B), I choose ('
        >>> answer_stem(("A", "B", "C", "D"))
        'Out of (A), (B), (C) and (D), I choose ('
    """
    out = [f"({label})" for label in answer_labels(labels)]
    return f"Out of {', '.join(out[:-1])} and {out[-1]}, I choose ("


def paper_prompt(question: str, labels: Labels = "AB") -> str:
    """The paper's raw format for an item, ending right before the answer label."""
    return f"Human:\n{question}\n\nAI:\n{answer_stem(labels)}"


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

    ``assistant_prefix`` (e.g. the answer stem ``"Out of (A) and (B), I choose ("``) is
    rendered as the start of the assistant's reply, as the template writes replies (Llama
    2's puts a space after ``[/INST]``, ChatML's a newline after ``assistant``), so the
    next token is the answer. Tokenizers without a template (Llama 2 base/chat on the Hub
    have none in some releases) fall back to :func:`llama2_chat`.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": message}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        if assistant_prefix:
            messages.append({"role": "assistant", "content": assistant_prefix})
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 continue_final_message=True)
            if not isinstance(text, str):
                raise InvalidTypeError(
                    f"chat template returned {type(text).__name__}, expected str")
            return text
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise InvalidTypeError(f"chat template returned {type(text).__name__}, expected str")
    else:
        text = llama2_chat(message, system) + " "
    return text + assistant_prefix


_MARK = "REPLYSTARTSHERE"


def reply_lead(tokenizer: Any, message: str, *, system: str | None = None) -> str:
    """What the chat template writes between :func:`chat_prompt` (no ``assistant_prefix``)
    and the first word of the reply: ``" "`` for Llama 2 (``"[/INST] Sure"``), ``""`` for
    ChatML (``"assistant\nSure"``).

    Start a reply that is appended to the prompt as its own text with it, so the reply is
    tokenised as the model reads replies (``"▁Sure"`` after ``"[/INST]"`` on Llama 2).
    ``""`` (with a warning) when the template renders a reply that does not extend its
    generation prompt.
    """
    bare = chat_prompt(tokenizer, message, system=system)
    marked = chat_prompt(tokenizer, message, system=system, assistant_prefix=_MARK)
    if marked.startswith(bare) and marked.endswith(_MARK):
        return marked[len(bare):-len(_MARK)]
    logger.warning("the chat template renders a reply that does not continue its generation "
                   "prompt; replies are appended to the prompt with nothing between")
    return ""


def format_item(
    question: str, labels: Labels, fmt: PromptFormat, tokenizer: Any | None = None
) -> str:
    """An item in ``fmt``, ending with the answer stem for ``labels``.

    Args:
        question: The bare question (with its ``Choices:`` lines, if any).
        labels: The item's answer labels (``item.choices``) or a kind (``"AB"``,
            ``"YesNo"``) for its default pair.
        fmt: ``"paper"`` (raw Human/AI text) or ``"chat"`` (the model's chat template).
        tokenizer: The model's tokenizer, needed for ``"chat"``.

    Example:
        >>> format_item("Q?", ("A", "B", "C"), "paper")
        'Human:\\nQ?\\n\\nAI:\\nOut of (A), (B) and (C), I choose ('
    """
    if fmt == "paper":
        return paper_prompt(question, labels)
    if fmt == "chat":
        if tokenizer is None:
            raise InvalidValueError("format 'chat' needs the model's tokenizer")
        return chat_prompt(tokenizer, question, assistant_prefix=answer_stem(labels))
    raise InvalidValueError(f"unknown prompt format {fmt!r}; use 'paper' or 'chat'")


_CHOICE_LINE = re.compile(r"^[ \t]*\(([A-Z])\)", re.MULTILINE)


def listed_choices(question: str) -> tuple[str, ...]:
    """The letters of a question's choice lines (``" (A) ..."``), in order, without repeats.

    Only the text after the question's last ``"Choices:"`` is read when it has one, so
    lines such as ``"(I) ..."`` in the question's body are not taken for choices.

    Example:
        >>> listed_choices("Pick.\\n\\nChoices:\\n (A) x\\n (B) y\\n (C) z")
        ('A', 'B', 'C')
    """
    _, heading, tail = question.rpartition("Choices:")
    text = tail if heading else question
    return tuple(dict.fromkeys(m.group(1) for m in _CHOICE_LINE.finditer(text)))


def default_choices(question: str, matching: str, not_matching: str) -> tuple[str, ...]:
    """The labels an item offers when its file does not say: Yes/No, the question's listed
    choices (with an answer they miss), else A/B."""
    if label_kind(matching) == "YesNo":
        return YESNO_ANSWERS
    listed = listed_choices(question)
    if not listed and matching in AB_ANSWERS and not_matching in AB_ANSWERS:
        return AB_ANSWERS
    if matching in listed and not_matching in listed:
        return listed
    # an answer the question does not list is still offered (loading warns about it)
    return tuple(sorted({*listed, matching, not_matching}))
