"""Typed results keys format and parse themselves exactly."""

from __future__ import annotations

import pytest

from actsteer.paper.broad_skills.keys import BaselineKey, SweepKey
from actsteer.paper.keys import CellKeyError, parse, try_parse
from actsteer.paper.multi_behaviour.keys import (
    CombinedKey,
    DefaultKey,
    GridKey,
    IndividualKey,
    SimultaneousKey,
    TaxKey,
)

KEYS = [
    DefaultKey("myopia", "test"),
    GridKey("sycophancy", 14, -8.0),
    GridKey("a-file-stem-of-25-chars__", 0, 0.1 + 0.2),  # not representable in short form
    IndividualKey("wealth_seeking", "subtract"),
    CombinedKey("weighted_mean", "add", "agreeableness"),
    SimultaneousKey(-1.25, "anti_immigration"),
    TaxKey(0.0),
    BaselineKey(),
    SweepKey("general_permuted", 9, 1.5),
]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_parse_inverts_format(key) -> None:
    text = str(key)
    assert parse(text) == key and type(parse(text)) is type(key)
    assert type(key).parse(text) == key
    assert text.split("/")[0] == key.STEP


def test_numbers_are_normalised_so_one_cell_has_one_key() -> None:
    assert str(GridKey("m", 14, 4)) == str(GridKey("m", 14.0, 4.0)) == (
        "grid/behaviour=m/layer=14/multiplier=4.0")
    assert parse(str(GridKey("m", 2, 0.1 + 0.2))).multiplier == 0.1 + 0.2  # exact


def test_bad_keys_are_refused_with_the_reason() -> None:
    with pytest.raises(CellKeyError, match="contains '/'"):
        DefaultKey("path/like", "test")
    with pytest.raises(CellKeyError, match="'myopia' is not a field of GridKey"):
        parse("grid/myopia/L14/+4")  # the old f-string format
    with pytest.raises(CellKeyError, match="not a results key"):
        parse("sweep-old/general")
    with pytest.raises(CellKeyError, match="is not a int"):
        parse("grid/behaviour=m/layer=x/multiplier=1.0")
    with pytest.raises(CellKeyError, match="is a TaxKey, not a GridKey"):
        GridKey.parse(str(TaxKey(1.0)))
    assert try_parse("baseline") == BaselineKey() and try_parse("nonsense/x=1") is None
