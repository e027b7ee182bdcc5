"""Testing and demo helper: BETO-shaped model folders with RANDOM weights, built locally.

Not part of the search API. Tests, benchmarks and demos use it because the model hub cannot always
be reached: these folders have BETO's architecture (BertModel, WordPiece, uncased with accents
kept, [PAD] = 1) and load through exactly the same path as the real model (``BetoEncoder(folder)``),
but their vectors mean nothing. Needs ``tokenizers`` only for ``train_vocab``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BETO_PAD_ID = 1
# BETO's real vocabularies and configurations, shipped with the package (CC BY 4.0: see the
# README.md and LICENSE there); ``uncased`` is the default model's
BETO_DATA = Path(__file__).resolve().parent / "data" / "beto"
BETO_UNCASED = BETO_DATA / "uncased"
BETO_CASED = BETO_DATA / "cased"
# everyday Spanish words (accents, ñ) for the synthetic documents of tests and benchmarks
SPANISH_WORDS = (
    "río",
    "montaña",
    "ciudad",
    "historia",
    "ciencia",
    "cocina",
    "fútbol",
    "ley",
    "música",
    "salud",
    "economía",
    "mar",
    "sol",
    "libro",
    "canción",
    "niño",
    "año",
    "tren",
    "playa",
    "bosque",
    "lluvia",
    "nieve",
)
TOKENIZER_CONFIG = {
    "tokenizer_class": "BertTokenizer",
    "do_lower_case": True,
    "strip_accents": False,
    "model_max_length": 512,
}


def train_vocab(texts: Iterable[str], folder: Path, vocab_size: int = 4000) -> Path:
    """Train a WordPiece vocabulary (BETO's special tokens and ids) and write vocab.txt."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True, strip_accents=False, clean_text=True)
    special = ["[MASK]", "[PAD]", "[UNUSED]", "[UNK]", "[CLS]", "[SEP]"]  # BETO's order
    tok.train_from_iterator(list(texts), vocab_size=vocab_size, special_tokens=special)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(folder))
    return folder / "vocab.txt"


def build_bert_folder(
    folder: Path,
    vocab: Path = BETO_UNCASED / "vocab.txt",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_positions: int = 512,
    seed: int = 0,
    lower_case: bool = True,
) -> Path:
    """Write a random-weight BertModel with BETO's tokenizer settings into ``folder``.

    ``vocab``: a WordPiece vocab.txt in BETO's id order (default: BETO's own, shipped);
    ``lower_case=False`` for a cased vocabulary (accents are kept either way).
    """
    import torch
    from transformers import BertConfig, BertModel

    folder, vocab = Path(folder), Path(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    if vocab.resolve() != (folder / "vocab.txt").resolve():
        shutil.copy(vocab, folder / "vocab.txt")
    with (folder / "vocab.txt").open(encoding="utf-8") as fh:
        n_vocab = sum(1 for _ in fh)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**TOKENIZER_CONFIG, "do_lower_case": lower_case})
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        pad_token_id=BETO_PAD_ID,
    )
    from .backends.hf import quiet_loading  # no "Writing model shards" progress bar

    with quiet_loading():
        BertModel(config).save_pretrained(folder)
    return folder


def build_full_beto(
    folder: Path, beto_dir: Path = BETO_UNCASED, seed: int = 0, lower_case: bool | None = None
) -> Path:
    """A full-size BETO (12 layers, 768 hidden) with random weights: ``beto_dir``'s vocab.txt and
    config.json (default: the shipped uncased BETO; ``BETO_CASED`` for the cased one, which is
    then tokenized cased unless ``lower_case`` says otherwise)."""
    beto_dir = Path(beto_dir)
    if lower_case is None:
        lower_case = beto_dir.name != "cased"
    cfg = json.loads((beto_dir / "config.json").read_text())
    return build_bert_folder(
        folder,
        beto_dir / "vocab.txt",
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"],
        intermediate=cfg["intermediate_size"],
        max_positions=cfg["max_position_embeddings"],
        seed=seed,
        lower_case=lower_case,
    )


def build_cross_encoder_folder(
    folder: Path,
    vocab: Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_positions: int = 512,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Write a random-weight BERT cross-encoder (``BertForSequenceClassification``, one label)
    with BETO's tokenizer settings, saved as a sentence-transformers ``CrossEncoder`` folder.

    A wider ``initializer_range`` than BERT's 0.02 makes a tiny model's scores depend on its
    input (at 0.02 a 2-layer, 32-wide model gives nearly the same score to every pair).
    """
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    raw = folder.parent / (folder.name + ".raw")
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(vocab, raw / "vocab.txt")
    with (raw / "vocab.txt").open(encoding="utf-8") as fh:
        n_vocab = sum(1 for _ in fh)
    (raw / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg
        vocab_size=n_vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        pad_token_id=BETO_PAD_ID,
        num_labels=1,
        initializer_range=initializer_range,
    )
    BertForSequenceClassification(config).save_pretrained(raw)
    CrossEncoder(str(raw), device="cpu", trust_remote_code=False).save(str(folder))
    shutil.rmtree(raw, ignore_errors=True)
    return folder


@contextmanager
def encoder_factory(encoder: Any) -> Iterator[None]:
    """Within the block, every encoder an index builds (its own, its query encoder, a re-embed
    target) is ``encoder`` (one object, or a callable taking open_encoder's arguments), not a
    model loaded from its name: tests open CLI commands and engines on a prebuilt encoder."""
    from .index.context import Encoders

    build = encoder if callable(encoder) and not hasattr(encoder, "encode_queries") else None
    old = Encoders.factory
    Encoders.factory = build or (lambda *args, **kwargs: encoder)
    try:
        yield
    finally:
        Encoders.factory = old
