"""Token windows with overlap, cut at sentence boundaries; their char spans cover the text.

The text is first cut into segments that partition it exactly (each sentence keeps its trailing
whitespace). Segments are tokenized once (the encoder's tokenizer, or words when there is none),
then packed greedily into windows of at most ``max_tokens``; a segment longer than a window is split
at token boundaries. Each window starts with the last segments of the previous one, up to
``overlap`` tokens. The token ids of each window are kept so the encoder need not tokenize again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import InputError
from .types import Chunk

# A sentence ends at . ! ? … (with closing quotes/brackets) followed by whitespace, or at a blank line.
_SENTENCE_END = re.compile(r"(?:[.!?…]+[\"'»”’)\]]*\s+|\n\s*\n\s*)")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


SPECIAL_TOKENS = 2  # [CLS] and [SEP], added around every window when it is embedded


def check_chunk_size(chunk_tokens: int, max_length: int | None) -> None:
    """Refuse windows longer than the model can embed (they would be cut silently).

    ``max_length`` is the model's window including special tokens (``TokenEncoder.max_length``);
    ``None`` or 0 means unknown (an encoder without a tokenizer), which is not checked.
    """
    if not max_length:
        return
    limit = max_length - SPECIAL_TOKENS
    if chunk_tokens > limit:
        raise InputError(
            f"a chunk of {chunk_tokens} tokens does not fit the model's window of {max_length} "
            f"tokens ({limit} plus [CLS] and [SEP]), so its end would never be embedded; use "
            f"--chunk-tokens {limit} or less."
        )


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the chunker uses."""

    def __call__(self, text: list[str], **kwargs: Any) -> Any: ...


@dataclass
class _Piece:
    start: int
    end: int
    ids: list[int] | None
    offsets: list[tuple[int, int]]  # token char spans, relative to the text

    @property
    def n(self) -> int:
        return len(self.offsets)


def split_segments(text: str) -> list[tuple[int, int]]:
    """Sentence-like segments (start, end) that partition ``text`` exactly."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > pos:
            spans.append((pos, m.end()))
            pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    return spans


class Chunker:
    """Cuts documents into overlapping token windows at sentence boundaries."""

    def __init__(self, tokenizer: Tokenizer | None, max_tokens: int, overlap: int) -> None:
        if max_tokens < 8:
            raise InputError("chunk size must be at least 8 tokens.")
        if overlap < 0 or overlap >= max_tokens:
            raise InputError("overlap must be at least 0 and smaller than the chunk size.")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap

    def _pieces(self, text: str) -> list[_Piece]:
        segments = split_segments(text)
        if self.tokenizer is None:
            pieces = []
            for s, e in segments:
                offs = [(m.start(), m.end()) for m in _WORD.finditer(text, s, e)]
                pieces.append(_Piece(s, e, None, offs))
            return pieces
        enc = self.tokenizer(
            [text[s:e] for s, e in segments],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        pieces = []
        for (s, e), ids, offs in zip(segments, enc["input_ids"], enc["offset_mapping"]):
            pieces.append(_Piece(s, e, list(ids), [(s + a, s + b) for a, b in offs]))
        return pieces

    def _split_long(self, piece: _Piece) -> list[_Piece]:
        """Cut a segment longer than a window at token boundaries."""
        out = []
        step = self.max_tokens
        for i in range(0, piece.n, step):
            offs = piece.offsets[i : i + step]
            start = piece.start if i == 0 else offs[0][0]
            end = piece.end if i + step >= piece.n else piece.offsets[i + step][0]
            ids = piece.ids[i : i + step] if piece.ids is not None else None
            out.append(_Piece(start, end, ids, offs))
        return out

    def chunk(self, text: str) -> list[Chunk]:
        """Windows over ``text``; their spans are contiguous and cover it from 0 to len(text)."""
        if not text:
            return []
        pieces: list[_Piece] = []
        for p in self._pieces(text):
            pieces.extend(self._split_long(p) if p.n > self.max_tokens else [p])
        windows: list[list[_Piece]] = []
        current: list[_Piece] = []
        size = 0
        fresh = 0  # pieces in ``current`` not carried over from the previous window
        for p in pieces:
            if current and size + p.n > self.max_tokens and fresh:
                windows.append(current)
                carry: list[_Piece] = []
                carried = 0
                for q in reversed(current):
                    if carried + q.n > self.overlap or carried + q.n + p.n > self.max_tokens:
                        break
                    carry.insert(0, q)
                    carried += q.n
                current, size, fresh = carry, carried, 0
            current.append(p)
            size += p.n
            fresh += 1
        if current and (fresh or not windows):
            windows.append(current)
        chunks = []
        prev_end = 0
        for i, win in enumerate(windows):
            start = min(win[0].start, prev_end)
            end = len(text) if i == len(windows) - 1 else win[-1].end
            ids = None
            if self.tokenizer is not None:
                ids = [t for q in win for t in (q.ids or [])]
            chunks.append(
                Chunk(ordinal=i, start=start, end=end, text=text[start:end], token_ids=ids)
            )
            prev_end = max(prev_end, end)
        return chunks
