"""Behaviour datasets: loading, validation and the paper's splits.

A behaviour dataset is a list of multiple-choice questions, each with the answer that
matches the behaviour (e.g. the myopic choice) and one that does not. Answers are
letters (most items offer ``(A)``/``(B)``; any file of Anthropic's model-written-evals
loads, ``(C)`` ... ``(H)`` answers included) or Yes/No; each item carries the labels it
offers (:attr:`BehaviourItem.choices`), which its prompt names.

* :mod:`~actsteer.data.behaviours.items`: :class:`BehaviourItem`,
  :class:`BehaviourDataset` (slicing, the paper's seed-13 splits, contrastive pairs,
  answer balance);
* :mod:`~actsteer.data.behaviours.formats`: the paper's ``.json`` and Anthropic's
  ``.jsonl`` formats, with errors that name the file and row;
* :mod:`~actsteer.data.behaviours.sources`: built-ins, the paper's files, the Hub, and
  :func:`load_behaviour`, which picks one from a name, a path or ``"hub:<file>"``.

Example:
    >>> ds = load_behaviour("builtin:myopia")  # built-in, no files needed
    >>> ds.kind
    'AB'
    >>> s = ds.splits()                        # 50/20/30 of what is available
    >>> len(s.vector), len(s.grid), len(s.test)
    (36, 14, 22)
    >>> pairs = ds.pairs()                     # ContrastivePair per item, for caa_vector
"""

from actsteer.data.behaviours.formats import (
    DatasetFormatError,
    OnError,
    load_anthropic_jsonl,
    load_file,
    load_paper_json,
    parse_paper_prompt,
    read_text,
    render_paper_prompt,
)
from actsteer.data.behaviours.items import (
    AB_ANSWERS,
    BALANCE_MIN_ITEMS,
    BALANCE_SHARE,
    PAPER_SEED,
    PAPER_SPLIT_SIZES,
    YESNO_ANSWERS,
    AnswerKind,
    BehaviourDataset,
    BehaviourItem,
    PaperSplits,
    listed_choices,
)
from actsteer.data.behaviours.sources import (
    BUILTIN_BEHAVIOURS,
    HUB_REPO,
    PAPER_BEHAVIOURS,
    PAPER_FILES,
    DatasetUnavailableError,
    canonical_name,
    default_data_dir,
    load_behaviour,
    load_builtin,
    load_from_hub,
)

__all__ = [
    "AB_ANSWERS",
    "BALANCE_MIN_ITEMS",
    "BALANCE_SHARE",
    "BUILTIN_BEHAVIOURS",
    "HUB_REPO",
    "PAPER_BEHAVIOURS",
    "PAPER_FILES",
    "PAPER_SEED",
    "PAPER_SPLIT_SIZES",
    "YESNO_ANSWERS",
    "AnswerKind",
    "BehaviourDataset",
    "BehaviourItem",
    "DatasetFormatError",
    "DatasetUnavailableError",
    "OnError",
    "PaperSplits",
    "canonical_name",
    "default_data_dir",
    "listed_choices",
    "load_anthropic_jsonl",
    "load_behaviour",
    "load_builtin",
    "load_file",
    "load_from_hub",
    "load_paper_json",
    "parse_paper_prompt",
    "read_text",
    "render_paper_prompt",
]
