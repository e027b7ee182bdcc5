"""BetoEncoder: pooling math with padding, normalisation, tokenization with BETO's vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beto_search import BetoEncoder, Encoder
from beto_search.errors import InputError, ModelLoadError

TEXTS = ["Hola.", "¿Cuál es la capital de España? Madrid es la capital y la ciudad más poblada."]


def _hand_pooled(model_dir: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Token vectors from the raw BertModel, pooled by hand over the real (unpadded) tokens."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval()
    out = []
    for text in texts:  # one at a time: no padding at all
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0].numpy()
        vec = {"mean": hidden.mean(0), "max": hidden.max(0), "cls": hidden[0]}[pooling]
        out.append(vec / np.linalg.norm(vec))
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_pooling_matches_hand_computation_with_padding(tiny_model: Path, pooling: str) -> None:
    enc = BetoEncoder(str(tiny_model), pooling=pooling)
    got = enc.encode_documents(TEXTS)  # one batch: the short text is padded
    want = _hand_pooled(tiny_model, TEXTS, pooling)
    assert got.dtype == np.float32 and got.shape == (2, enc.dimension)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_a_vector(tiny_encoder: BetoEncoder) -> None:
    alone = tiny_encoder.encode_documents([TEXTS[0]])
    batched = tiny_encoder.encode_documents(TEXTS)[:1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_encoder_protocol_and_facts(tiny_encoder: BetoEncoder, tiny_model: Path) -> None:
    assert isinstance(tiny_encoder, Encoder)
    assert tiny_encoder.name == str(tiny_model)
    assert tiny_encoder.dimension == 32
    assert tiny_encoder.max_seq_length == 512
    assert tiny_encoder.describe()["pooling"] == "mean"
    q = tiny_encoder.encode_queries(["una consulta"])
    assert q.shape == (1, 32)


def test_long_text_is_truncated_to_the_model_window(tiny_encoder: BetoEncoder) -> None:
    ids = tiny_encoder.tokenize(["palabra " * 2000])[0]
    assert len(ids) == 510
    assert tiny_encoder.encode_documents(["palabra " * 2000]).shape == (1, 32)


def test_batches_respect_the_token_budget(tiny_model: Path) -> None:
    enc = BetoEncoder(str(tiny_model), batch_size=8, max_batch_tokens=100)
    lengths = [50, 10, 12, 48, 11, 30, 9]
    batches = enc.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1


def test_saved_sentence_transformers_folder_loads(
    tiny_encoder: BetoEncoder, tmp_path: Path
) -> None:
    folder = tmp_path / "st"
    tiny_encoder._model.save(str(folder))
    enc = BetoEncoder(str(folder))
    assert enc.pooling == "mean"
    np.testing.assert_allclose(
        enc.encode_documents(TEXTS), tiny_encoder.encode_documents(TEXTS), atol=1e-5
    )
    assert BetoEncoder(str(folder), pooling="max").pooling == "max"


def test_missing_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        BetoEncoder(str(tmp_path / "no-such-model"))
    msg = str(err.value)
    assert "does not exist" in msg and "\n" not in msg


def test_unreachable_hub_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        BetoEncoder("dccuchile/bert-base-spanish-wwm-uncased")
    msg = str(err.value)
    assert "dccuchile/bert-base-spanish-wwm-uncased" in msg
    assert "--model" in msg and ".save(" in msg and "\n" not in msg


def test_folder_without_weights_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(tiny_model / "vocab.txt", bad / "vocab.txt")
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError):
        BetoEncoder(str(bad))


@pytest.mark.parametrize(
    "kwargs", [{"pooling": "sum"}, {"precision": "fp64"}, {"device": "tpu"}, {"batch_size": 0}]
)
def test_bad_settings_are_refused(tiny_model: Path, kwargs: dict) -> None:
    with pytest.raises(InputError):
        BetoEncoder(str(tiny_model), **kwargs)


def test_beto_vocabulary_tokenizes_spanish_without_unk(
    beto_vocab_dir: Path, tmp_path: Path
) -> None:
    """The transformers-5 trap: a wrongly built tokenizer maps every token to [UNK]."""
    from transformers import AutoTokenizer

    from beto_search.testing import TOKENIZER_CONFIG

    folder = tmp_path / "tok"
    folder.mkdir()
    shutil.copy(beto_vocab_dir / "vocab.txt", folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    tok = AutoTokenizer.from_pretrained(folder)
    tokens = tok.tokenize("¿Cuál es la capital de España?")
    assert "[UNK]" not in tokens
    assert "cuál" in tokens and "españa" in tokens  # lower-cased, accents kept
    ids = tok("¿Cuál es la capital de España?")["input_ids"]
    assert ids[0] == 4 and ids[-1] == 5 and tok.unk_token_id not in ids  # [CLS] 4, [SEP] 5
    assert tok.pad_token_id == 1


def test_tiny_model_uses_beto_vocabulary(beto_vocab_dir: Path, tiny_encoder: BetoEncoder) -> None:
    ids = tiny_encoder.tokenize(["¿Cuál es la capital de España? Canción, canciones, año."])[0]
    assert tiny_encoder.tokenizer.unk_token_id not in ids
    tokens = tiny_encoder.tokenizer.convert_ids_to_tokens(ids)
    assert "canción" in tokens and "año" in tokens  # lower-cased, accents and ñ kept


def test_shipped_beto_vocabulary_is_betos(beto_vocab_dir: Path) -> None:
    """The in-package copy (CC BY 4.0, attributed) is BETO's: 31,002 entries in BETO's id order."""
    from beto_search.testing import BETO_CASED, BETO_DATA

    for folder in (beto_vocab_dir, BETO_CASED):
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        assert len(vocab) == 31002
        assert vocab[:6] == ["[MASK]", "[PAD]", "[EOS]", "[UNK]", "[CLS]", "[SEP]"]
        assert json.loads((folder / "config.json").read_text())["vocab_size"] == 31002
    assert "CC BY 4.0" in (BETO_DATA / "README.md").read_text(encoding="utf-8")
    assert "Cañete" in (BETO_DATA / "LICENSE").read_text(encoding="utf-8")


def test_corpus_words_have_no_unknown_tokens(tiny_encoder: BetoEncoder) -> None:
    """Every word of the sample corpus tokenizes without [UNK] (4,500 distinct words), except
    those with 'ü': BETO's published vocabulary has no 'ü' (nor '«', '%', ';'), so the real BETO
    maps 'pingüino' to [UNK] too."""
    import re

    from .conftest import SPANISH_TEXTS, corpus_texts

    words = {w for t in SPANISH_TEXTS + corpus_texts() for w in re.findall(r"[^\W\d_]+", t)}
    plain = sorted(w for w in words if "ü" not in w.lower())
    unk = tiny_encoder.tokenizer.unk_token_id
    unknown = [w for w, ids in zip(plain, tiny_encoder.tokenize(plain)) if unk in ids]
    assert len(plain) > 4000 and unknown == []
    assert unk in tiny_encoder.tokenize(["pingüino"])[0]  # BETO's own gap, not a loading fault


def test_cased_beto_keeps_case(tmp_path: Path) -> None:
    from beto_search.testing import BETO_CASED, build_bert_folder

    folder = build_bert_folder(tmp_path / "cased", BETO_CASED / "vocab.txt", lower_case=False)
    enc = BetoEncoder(str(folder))
    tokens = enc.tokenizer.tokenize("Madrid es la capital de España.")
    assert "Madrid" in tokens and "España" in tokens and "[UNK]" not in tokens


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """A network-less hub: HF_ENDPOINT on a closed local port, an empty cache, no HF_HUB_OFFLINE."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    root = str(Path(__file__).resolve().parents[1])
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p),
    )
    return env


@pytest.mark.slow
def test_unreachable_hub_fails_fast_in_one_sentence(tmp_path: Path) -> None:
    """Without a network: one short request, then the sentence; no minute of retry warnings."""
    import subprocess
    import sys

    (tmp_path / "a.txt").write_text("El río y la montaña.", encoding="utf-8")
    args = ["ingest", str(tmp_path / "a.txt"), "--index", str(tmp_path / "idx")]
    proc = subprocess.run(
        [sys.executable, "-m", "beto_search.cli", *args, "--model", "nadie/no-existe"],
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard only: the hub client's retries took 55 s on an idle machine
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: Could not load the model 'nadie/no-existe'")
    assert "cannot be reached" in lines[0] and "not in the Hugging Face cache" in lines[0]
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_unreachable_hub_loads_a_cached_model(tiny_model: Path, tmp_path: Path) -> None:
    """A hub id already in the Hugging Face cache loads from there when the hub cannot be reached."""
    import subprocess
    import sys

    env = _offline_env(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--alguien--beto-mini"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from beto_search import BetoEncoder; e = BetoEncoder('alguien/beto-mini', device='cpu'); "
        "print(e.encode_documents(['hola']).shape, e.revision)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(1,", "32)", commit]
    assert "Retry" not in proc.stderr
