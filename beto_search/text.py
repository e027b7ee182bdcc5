"""Text from bytes: encodings (declared, UTF-8, detected Western code pages) and the cleaning
every stored text gets (NFC, no BOM, no NUL, no lone surrogates). Used by ``readers`` and
``formats``, below both."""

from __future__ import annotations

import unicodedata

from .errors import InputError

SNIFF_BYTES = 64 * 1024


def clean_text(text: str) -> str:
    """NFC-normalise, drop a leading BOM and NUL bytes, replace lone surrogates with U+FFFD."""
    text = text.lstrip("\ufeff").replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. undecodable argv bytes: SQLite and tokenizers refuse them
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return unicodedata.normalize("NFC", text)


# Non-ASCII characters of Spanish text as cp1252 decodes them (few of them are what
# cp1252 makes of Cyrillic, Greek or Central European letters).
_WESTERN = set("áéíóúüñÁÉÍÓÚÜÑ¿¡«»€“”‘’—–…ºª°·çÇ\u00a0")


def detect_encoding(sample: bytes) -> str | None:
    """The encoding of non-UTF-8 bytes: cp1252 when it reads as Western text, else detected.

    charset-normalizer alone often takes Spanish latin-1/cp1252 text for a Baltic or Central
    European code page (ñ -> ń), and short samples for anything at all, so cp1252 goes first.
    """
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        text = ""
    high = [c for c in text if ord(c) > 127]
    if high and sum(c in _WESTERN for c in high) >= 0.6 * len(high):
        return "cp1252"
    from charset_normalizer import from_bytes  # only for files that are not UTF-8

    best = from_bytes(sample).best()
    return best.encoding if best is not None else None


def decode_bytes(data: bytes, encoding: str | None = None) -> str:
    """Decode file bytes: forced encoding, else UTF-8 (with or without BOM), else detected."""
    if encoding:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot decode as {encoding}: {exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    found = detect_encoding(data[: 4 * SNIFF_BYTES])
    if found is None:
        raise InputError("not text (no character encoding fits)")
    return data.decode(found, errors="replace")
