"""Truncation to UTF-8 byte limits: valid UTF-8, within the limit, visibly marked."""

from __future__ import annotations

import re

import pytest

from rds_csi.pipeline.truncate import MESSAGE_LIMIT, truncate_middle_utf8, truncate_utf8

CJK = "存储卷挂载失败"  # 3 bytes per character
EMOJI = "💾"  # 4 bytes


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))  # raises on anything that is not valid UTF-8


@pytest.mark.parametrize("text", ["", "short", "é" * 256, "x" * MESSAGE_LIMIT, EMOJI * 256])
def test_text_within_the_limit_is_unchanged(text: str) -> None:
    assert truncate_utf8(text, MESSAGE_LIMIT) == text
    assert truncate_middle_utf8(text, MESSAGE_LIMIT) == text


def test_one_byte_over_is_cut_and_marked() -> None:
    text = "x" * (MESSAGE_LIMIT + 1)
    cut = truncate_utf8(text, MESSAGE_LIMIT)
    assert utf8_len(cut) == MESSAGE_LIMIT
    assert cut.endswith(" ...")


# Every alignment of a multi-byte character against the cut point.
MULTIBYTE = [
    pad + body * 600
    for body in (CJK, EMOJI, "é", CJK + EMOJI + "a")
    for pad in ("", "a", "ab", "abc")
]


@pytest.mark.parametrize("text", MULTIBYTE)
@pytest.mark.parametrize("limit", [MESSAGE_LIMIT, 128, 7])
def test_head_cut_is_valid_within_limit_and_marked(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert utf8_len(cut) <= limit
    assert utf8_len(cut) > limit - 4 - len(" ...")  # at most one character wasted
    assert cut.endswith(" ...")
    assert text.startswith(cut.removesuffix(" ..."))


@pytest.mark.parametrize("text", MULTIBYTE)
def test_middle_cut_keeps_head_and_tail_and_says_how_much_went(text: str) -> None:
    cut = truncate_middle_utf8(text, MESSAGE_LIMIT)
    assert utf8_len(cut) <= MESSAGE_LIMIT
    match = re.fullmatch(r"(.*)\.\.\.\[(\d+) bytes truncated\]\.\.\.(.*)", cut, re.DOTALL)
    assert match is not None
    head, omitted, tail = match.group(1), int(match.group(2)), match.group(3)
    assert text.startswith(head) and text.endswith(tail)
    assert head and tail
    assert utf8_len(head) + omitted + utf8_len(tail) == utf8_len(text)


def test_middle_cut_keeps_the_last_line_of_a_long_stderr() -> None:
    stderr = (
        "\n".join(f"line {i}: noise" for i in range(500)) + "\nmount: wrong fs type, bad option"
    )
    cut = truncate_middle_utf8("mount failed: " + stderr, MESSAGE_LIMIT)
    assert cut.startswith("mount failed: line 0")
    assert cut.endswith("mount: wrong fs type, bad option")


def test_lone_surrogates_become_encodable() -> None:
    text = "path /mnt/\udcff" * 200  # as os.fsdecode gives for undecodable bytes
    for cut in (truncate_utf8(text, MESSAGE_LIMIT), truncate_middle_utf8(text, MESSAGE_LIMIT)):
        assert utf8_len(cut) <= MESSAGE_LIMIT


def test_limit_smaller_than_the_marker_still_fits() -> None:
    assert utf8_len(truncate_utf8(CJK * 10, 3, marker=" ...")) <= 3
    assert truncate_utf8("abcdef", 3, marker="") == "abc"
    assert utf8_len(truncate_middle_utf8(EMOJI * 100, 20)) <= 20
