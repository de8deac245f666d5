"""Tokens to words by character offsets, for WordPiece, byte-level BPE and SentencePiece alike.

A word is a run of letters/digits (with inner apostrophes: ``don't``) or a single punctuation
mark; whitespace separates words. A token that spans several such words (a SentencePiece piece
like ``▁Honestly,``) merges them into one word: relevance is never split by guesswork. Each
token belongs to the word that contains its first non-space character, and a token of
whitespace only (a lone ``Ġ`` or ``▁``) to the word that follows it. Special tokens belong to no
word.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text`` (before any merging)."""
    return [match.span() for match in WORD.finditer(text)]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def group_words(
    text: str, offsets: Sequence[tuple[int, int]], special: Sequence[bool]
) -> tuple[list[tuple[int, int]], list[int]]:
    """Word spans of ``text`` given its tokens, and each token's word index (-1: none)."""
    spans = word_spans(text)
    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    parent = list(range(len(spans)))  # union of words that one token spans
    for (start, end), is_special in zip(offsets, special):
        start, end = _trimmed(text, start, end)
        if is_special or start >= end:
            continue
        first = bisect.bisect_right(starts, start) - 1
        last = bisect.bisect_left(ends, end)
        for index in range(max(first, 0) + 1, min(last, len(spans) - 1) + 1):
            parent[index] = parent[index - 1]
    groups: list[tuple[int, int]] = []
    group_of = []
    for index, (start, end) in enumerate(spans):
        if index > 0 and parent[index] == parent[index - 1]:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((start, end))
        group_of.append(len(groups) - 1)
    owners = []
    for (start, end), is_special in zip(offsets, special):
        owners.append(-1 if is_special else _owner(text, start, end, starts, ends, group_of))
    return groups, owners


def _owner(text: str, start: int, end: int, starts: list[int], ends: list[int], group_of: list[int]) -> int:
    first, last = _trimmed(text, start, end)
    if first >= last:  # whitespace only: the word that follows
        following = bisect.bisect_left(starts, start)
        return group_of[following] if following < len(starts) else -1
    word = bisect.bisect_right(starts, first) - 1
    return group_of[word] if word >= 0 and first < ends[word] else -1
