"""Chunking: windows within budget, overlap, sentence cuts, spans covering the text."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beto_search.chunking import Chunker, check_chunk_size, split_segments
from beto_search.errors import InputError

TEXT = (
    "La Revolución mexicana comenzó en 1910. Francisco I. Madero llamó a levantarse en armas. "
    "¿Quién ganó? Nadie del todo: fue una década de guerras.\n\nEl país cambió para siempre. "
) * 12


def _covers(text: str, chunks) -> bool:
    pos = 0
    for c in chunks:
        if c.start > pos:
            return False
        pos = max(pos, c.end)
    return pos == len(text) and all(text[c.start : c.end] == c.text for c in chunks)


def test_segments_partition_the_text() -> None:
    spans = split_segments(TEXT)
    assert "".join(TEXT[s:e] for s, e in spans) == TEXT
    assert TEXT[spans[0][0] : spans[0][1]].strip() == "La Revolución mexicana comenzó en 1910."


def test_token_windows_with_tokenizer(tiny_encoder) -> None:
    chunker = Chunker(tiny_encoder.tokenizer, max_tokens=60, overlap=15)
    chunks = chunker.chunk(TEXT)
    assert len(chunks) > 3
    assert _covers(TEXT, chunks)
    for c in chunks:
        assert 0 < len(c.token_ids) <= 60
        # token ids equal a fresh tokenization of the chunk's text
        assert c.token_ids == tiny_encoder.tokenize([c.text])[0]
    # consecutive windows overlap, and most cut at sentence ends
    assert all(b.start < a.end for a, b in itertools.pairwise(chunks))
    ends = sum(1 for c in chunks[:-1] if c.text.rstrip()[-1] in ".?!")
    assert ends >= len(chunks) - 2


def test_a_sentence_longer_than_a_window_is_split(tiny_encoder) -> None:
    text = "palabra " * 300
    chunks = Chunker(tiny_encoder.tokenizer, max_tokens=50, overlap=0).chunk(text)
    assert _covers(text, chunks)
    assert all(len(c.token_ids) <= 50 for c in chunks)


def test_word_budget_without_tokenizer() -> None:
    chunks = Chunker(None, max_tokens=40, overlap=8).chunk(TEXT)
    assert _covers(TEXT, chunks)
    assert all(c.token_ids is None for c in chunks)


def test_short_text_is_one_chunk(tiny_encoder) -> None:
    chunks = Chunker(tiny_encoder.tokenizer, 510, 64).chunk("Una frase corta.")
    assert len(chunks) == 1 and chunks[0].start == 0 and chunks[0].end == 16


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=400), st.integers(8, 40), st.integers(0, 7))
def test_any_text_is_covered(text: str, size: int, overlap: int) -> None:
    chunks = Chunker(None, size, overlap).chunk(text)
    assert _covers(text, chunks)


def test_chunk_size_must_fit_the_model_window() -> None:
    check_chunk_size(510, 512)  # 510 tokens + [CLS] + [SEP]
    check_chunk_size(10_000, None)  # unknown window (no tokenizer): not checked
    with pytest.raises(InputError, match=r"--chunk-tokens 510 or less"):
        check_chunk_size(511, 512)
