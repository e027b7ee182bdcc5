"""Token windows with overlap, cut at sentence boundaries; their char spans cover the text.

The text is first cut into segments that partition it exactly (each sentence keeps its trailing
whitespace). Segments are tokenized once (the encoder's tokenizer, or words when there is none),
then packed greedily into windows of at most ``max_tokens``; a segment longer than a window is split
at token boundaries. Each window starts with the last segments of the previous one, up to
``overlap`` tokens. The token ids of each window are kept so the encoder need not tokenize again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
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


BLOCK_CHARS = 1 << 16  # chars cut into pieces at a time by ``chunk_stream``
MAX_BLOCKS = 8  # blocks read without a sentence end before a cut at a space


class _Packer:
    """Packs pieces greedily into windows of at most ``max_tokens``, each new window starting with
    the previous one's last pieces up to ``overlap`` tokens; works piece by piece (streams too)."""

    def __init__(self, max_tokens: int, overlap: int) -> None:
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.current: list[_Piece] = []
        self.size = 0
        self.fresh = 0  # pieces in ``current`` not carried over from the previous window
        self.emitted = 0

    def add(self, p: _Piece) -> list[_Piece] | None:
        """Take one piece; returns the window it closed, if any."""
        out = None
        if self.current and self.size + p.n > self.max_tokens and self.fresh:
            out = self.current
            carry: list[_Piece] = []
            carried = 0
            for q in reversed(self.current):
                if carried + q.n > self.overlap or carried + q.n + p.n > self.max_tokens:
                    break
                carry.insert(0, q)
                carried += q.n
            self.current, self.size, self.fresh = carry, carried, 0
            self.emitted += 1
        self.current.append(p)
        self.size += p.n
        self.fresh += 1
        return out

    def finish(self) -> list[_Piece] | None:
        """The last window, if it holds anything new."""
        if self.current and (self.fresh or not self.emitted):
            return self.current
        return None


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

    def _pieces(self, text: str, base: int = 0) -> list[_Piece]:
        """Pieces of ``text`` (one per segment, long ones split), offsets shifted by ``base``."""
        segments = split_segments(text)
        pieces: list[_Piece] = []
        if self.tokenizer is None:
            for s, e in segments:
                offs = [(base + m.start(), base + m.end()) for m in _WORD.finditer(text, s, e)]
                pieces.append(_Piece(base + s, base + e, None, offs))
        elif segments:
            enc = self.tokenizer(
                [text[s:e] for s, e in segments],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            for (s, e), ids, offs in zip(segments, enc["input_ids"], enc["offset_mapping"]):
                s, e = s + base, e + base
                pieces.append(_Piece(s, e, list(ids), [(s + a, s + b) for a, b in offs]))
        out: list[_Piece] = []
        for p in pieces:
            out.extend(self._split_long(p) if p.n > self.max_tokens else [p])
        return out

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

    def _ids(self, win: list[_Piece]) -> list[int] | None:
        if self.tokenizer is None:
            return None
        return [t for q in win for t in (q.ids or [])]

    def chunk(self, text: str) -> list[Chunk]:
        """Windows over ``text``; their spans are contiguous and cover it from 0 to len(text)."""
        if not text:
            return []
        packer = _Packer(self.max_tokens, self.overlap)
        windows = [w for p in self._pieces(text) if (w := packer.add(p)) is not None]
        last = packer.finish()
        if last is not None:
            windows.append(last)
        chunks = []
        prev_end = 0
        for i, win in enumerate(windows):
            start = min(win[0].start, prev_end)
            end = len(text) if i == len(windows) - 1 else win[-1].end
            chunks.append(
                Chunk(
                    ordinal=i,
                    start=start,
                    end=end,
                    text=text[start:end],
                    token_ids=self._ids(win),
                )
            )
            prev_end = max(prev_end, end)
        return chunks

    def chunk_stream(self, parts: Iterable[str], block_chars: int = BLOCK_CHARS) -> Iterator[Chunk]:
        """The windows of the concatenation of ``parts``, read block by block (memory bounded).

        Offsets are global (over the concatenated text). Text is cut into blocks only at the end
        of a sentence that is followed by more text, so segments, and thus windows, are the same
        as ``chunk("".join(parts))``; a run of ``MAX_BLOCKS`` blocks without any sentence end is
        cut at its last space instead (the only case where the windows may differ).
        """
        buf = ""  # the text from global offset ``keep`` on (what windows may still need)
        keep = 0
        cut_at = 0  # global offset up to which the text is cut into pieces
        read = 0  # chars read
        prev_end = 0
        ordinal = 0
        packer = _Packer(self.max_tokens, self.overlap)

        def emit(win: list[_Piece]) -> Chunk:
            nonlocal prev_end, ordinal
            start, end = min(win[0].start, prev_end), win[-1].end
            chunk = Chunk(ordinal, start, end, buf[start - keep : end - keep], self._ids(win))
            prev_end = max(prev_end, end)
            ordinal += 1
            return chunk

        it = iter(parts)
        eof = False
        while not eof:
            part = next(it, None)
            if part is None:
                eof = True
            elif part:
                buf += part
                read += len(part)
            if not eof and read - cut_at < block_chars:
                continue
            block = buf[cut_at - keep :]
            cut = len(block) if eof else _safe_cut(block, block_chars)
            if not cut:
                continue  # no sentence end yet: read on
            for p in self._pieces(block[:cut], cut_at):
                if (win := packer.add(p)) is not None:
                    yield emit(win)
            cut_at += cut
            low = min(prev_end, packer.current[0].start if packer.current else cut_at)
            if low - keep >= block_chars:  # drop text no window needs any more
                buf, keep = buf[low - keep :], low
        last = packer.finish()
        if last is not None:
            yield emit(last)


def _safe_cut(block: str, block_chars: int) -> int:
    """Where ``block`` (text not yet cut, more to come) may be cut without changing segments: after
    its last sentence end that is followed by a character of the block; 0 to read on."""
    cut = 0
    for m in _SENTENCE_END.finditer(block):
        if m.end() < len(block):
            cut = m.end()
    if cut or len(block) < MAX_BLOCKS * block_chars:
        return cut
    space = max(block.rfind(" "), block.rfind("\n"))
    return space + 1 if space > 0 else len(block)
