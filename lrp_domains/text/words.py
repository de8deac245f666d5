"""Tokens to words by character offsets, for WordPiece, byte-level BPE and SentencePiece alike.

A word is a run of letters/digits (with inner apostrophes: ``don't``) or a single punctuation
mark; whitespace separates words. Each token belongs to the word that contains its first
non-space character; a token of whitespace only (a lone ``Ġ`` or ``▁``) to the word that follows
it. Callers drop special tokens, whose offsets are empty, by their special-token mask.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text``."""
    return [match.span() for match in WORD.finditer(text)]


def token_words(text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """For each token (by its character offsets), the index of its word in ``spans``, or -1."""
    starts = [start for start, _ in spans]
    result = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        if start >= end:
            following = bisect.bisect_left(starts, start)
            result.append(following if following < len(spans) else -1)
            continue
        word = bisect.bisect_right(starts, start) - 1
        result.append(word if word >= 0 and start < spans[word][1] else -1)
    return result
