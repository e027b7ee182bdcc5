"""The compiled rerankers: the cross-encoder's BERT body as an ONNX Runtime or OpenVINO graph
(exported and quantized by ``backends/onnx.py`` / ``backends/openvino.py``, the encoder's own
code), the classification head in numpy on the first token.

``build`` makes one per model, precision and library versions into
``$BETO_SEARCH_CACHE/rerank/<key>/`` and checks its scores against the torch fp32 scores of the
same model on Spanish pairs (``agreement``, recorded in ``reranker.json``, a warning below
``MIN_AGREEMENT``); ``CompiledReranker`` runs a built one without torch.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .torch import activation_of, load_cross_encoder, max_length_of

log = logging.getLogger(__name__)

COMPILED_PRECISIONS = ("onnx-fp32", "onnx-int8", "ov-int8")
META_FILE = "reranker.json"
HEAD_FILE = "head.npz"
TOKENIZER_FILE = "tokenizer.json"
# Spearman correlation of a compiled reranker's scores with fp32's on the check pairs below
# which the build logs a warning (int8 of a real cross-encoder keeps the ranking near 1.0)
MIN_AGREEMENT = 0.95
CHECK_PAIRS = 64


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


# ----- build -------------------------------------------------------------------------------------
def _head(ce: Any) -> tuple[str, dict[str, np.ndarray]]:
    """The classification head of a BERT- or RoBERTa-style cross-encoder as numpy arrays."""
    model = ce.model
    body = model.base_model
    cls = getattr(model, "classifier", None)

    def arr(t: Any) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    pooler = getattr(body, "pooler", None)
    if pooler is not None and cls is not None and hasattr(cls, "weight"):  # BERT's head
        return "pooler", {
            "w1": arr(pooler.dense.weight),
            "b1": arr(pooler.dense.bias),
            "w2": arr(cls.weight),
            "b2": arr(cls.bias),
        }
    if cls is not None and hasattr(cls, "dense") and hasattr(cls, "out_proj"):  # RoBERTa's head
        return "dense", {
            "w1": arr(cls.dense.weight),
            "b1": arr(cls.dense.bias),
            "w2": arr(cls.out_proj.weight),
            "b2": arr(cls.out_proj.bias),
        }
    raise InputError(
        f"rerank precisions {', '.join(COMPILED_PRECISIONS)} support BERT- and RoBERTa-style "
        f"cross-encoders; '{ce.model.config.model_type}' runs at rerank precision fp32."
    )


def check_pairs(n: int = CHECK_PAIRS) -> list[tuple[str, str]]:
    """Spanish (query, passage) pairs from the shipped calibration texts: a passage's opening
    words against itself and against other passages (relevant and irrelevant pairs)."""
    from ..backends.openvino import calibration_texts

    texts = calibration_texts()
    out = []
    for i, text in enumerate(texts):
        query = " ".join(text.split()[:8])
        out.append((query, text))
        out.append((query, texts[(i * 7 + 3) % len(texts)]))
        if len(out) >= n:
            break
    return out[:n]


def settings(precision: str) -> dict[str, Any]:
    """What a compiled reranker depends on besides the model."""
    if precision == "ov-int8":
        from ..backends.openvino import settings as ov_settings

        base = ov_settings("ov-int8")
        base["calibration"] = f"pairs:{base['calibration']}"
    else:
        from ..backends.onnx import settings as onnx_settings

        base = onnx_settings(precision)
    return {**base, "rerank": 1}


def _libraries(precision: str) -> tuple[str, ...]:
    if precision == "ov-int8":
        from ..backends.openvino import LIBRARIES
    else:
        from ..backends.onnx import LIBRARIES
    return LIBRARIES


def cache_folder(model: str, revision: str | None, precision: str) -> Path:
    """Where the compiled reranker of ``model`` at ``precision`` is (or will be) cached."""
    from ..backends.base import cache_root, fingerprint

    key = fingerprint(model, revision, settings(precision), _libraries(precision))
    return cache_root() / "rerank" / key


def _graph_file(precision: str) -> str:
    return "model.xml" if precision == "ov-int8" else "model.onnx"


def is_built(folder: Path, precision: str) -> bool:
    return all(
        (folder / f).is_file()
        for f in (_graph_file(precision), META_FILE, HEAD_FILE, TOKENIZER_FILE)
    )


def _pair_features(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> list[Any]:
    enc = tokenizer(
        [q for q, _ in pairs],
        [p for _, p in pairs],
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
    )
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(row) for row in ids]  # RoBERTa has none
    return [
        (np.array([i], dtype=np.int64), np.array([t], dtype=np.int64)) for i, t in zip(ids, types)
    ]


def build(model: str, revision: str | None, precision: str, folder: Path) -> Path:
    """Export (and quantize) ``model``'s body into ``folder`` atomically, with its head, its
    tokenizer, and its agreement with torch fp32 on the check pairs."""
    from ..backends.base import build_atomically

    def run(tmp: Path) -> None:
        import torch

        ce = load_cross_encoder(model, "cpu", revision)
        kind, head = _head(ce)
        activation = activation_of(ce)
        if activation not in ("sigmoid", "identity"):
            raise InputError(
                f"rerank precision {precision} supports sigmoid or identity activations; "
                f"'{model}' uses {activation}: use rerank precision fp32."
            )
        tok = ce.tokenizer
        tok.save_pretrained(str(tmp))
        if not (tmp / TOKENIZER_FILE).is_file():
            raise InputError(
                f"rerank precision {precision} needs a fast tokenizer (tokenizer.json); "
                f"'{model}' has a slow one only."
            )
        np.savez(tmp / HEAD_FILE, w1=head["w1"], b1=head["b1"], w2=head["w2"], b2=head["b2"])
        max_length = max_length_of(ce)
        pairs = check_pairs()
        with torch.inference_mode():
            reference = np.asarray(
                ce.predict(pairs, batch_size=16, show_progress_bar=False), dtype=np.float64
            ).reshape(-1)
        body = ce.model.base_model
        if not (hasattr(body, "embeddings") and hasattr(body, "encoder")):
            raise InputError(
                f"rerank precision {precision} needs a BERT-like model; '{model}' is a "
                f"{type(body).__name__}."
            )
        facts: dict[str, Any] = {
            "reranker": model,
            "revision": revision,
            "precision": precision,
            "max_length": max_length,
            "head": kind,
            "activation": activation,
            "pad_id": int(tok.pad_token_id if tok.pad_token_id is not None else 0),
            "token_types": "token_type_ids" in tok.model_input_names,
        }
        features = _pair_features(tok, pairs, max_length)
        del ce
        gc.collect()  # the torch weights go before the runtime loads its copy
        if precision == "ov-int8":
            _build_openvino(body, features, tmp)
        else:
            _build_onnx(body, precision, tmp)
        del body
        gc.collect()
        (tmp / META_FILE).write_text(json.dumps(facts, indent=1))
        # the quality check: the compiled scores against fp32's on the same pairs
        compiled = CompiledReranker(tmp, precision, name=model)
        got = np.concatenate([compiled.score(q, [p]) for q, p in pairs])
        facts["agreement"] = agreement(reference, got)
        (tmp / META_FILE).write_text(json.dumps(facts, indent=1))
        if facts["agreement"]["spearman"] < MIN_AGREEMENT:
            log.warning(
                "the %s reranker of %s ranks the check pairs differently from fp32 "
                "(Spearman %.3f < %.2f); prefer rerank precision fp32 or onnx-fp32",
                precision,
                model,
                facts["agreement"]["spearman"],
                MIN_AGREEMENT,
            )
        del compiled
        gc.collect()

    log.info("building the %s reranker of %s into %s", precision, model, folder)
    return build_atomically(folder, run, lambda f: is_built(f, precision))


def _build_onnx(body: Any, precision: str, tmp: Path) -> None:
    """The body's ONNX graph (``backends/onnx.py``: export, int8, ORT optimisation) in ``tmp``."""
    from ..backends import onnx

    raw = onnx.export_onnx(body, tmp / "raw" / "model.onnx")
    if precision == "onnx-int8":
        raw = onnx.quantize(
            raw,
            tmp / "raw" / "model_int8.onnx",
            exclude=onnx.KEEP_FP32,
            per_channel=bool(onnx.INT8_SETTINGS["per_channel"]),
            reduce_range=bool(onnx.INT8_SETTINGS["reduce_range"]),
            weight_type=str(onnx.INT8_SETTINGS["weight_type"]),
        )
    onnx.optimise(raw, tmp / "model.onnx")
    for p in sorted((tmp / "raw").iterdir()):
        p.unlink()
    (tmp / "raw").rmdir()


def _build_openvino(body: Any, features: list[Any], tmp: Path) -> None:
    """The body's OpenVINO static int8 graph (``backends/openvino.py``: convert, NNCF),
    calibrated on (query, passage) pairs with their token types, in ``tmp``."""
    import openvino as ov

    from ..backends import openvino

    graph = openvino.convert(body)
    items = [
        {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}
        for ids, types in features
    ]
    graph = openvino.quantize(graph, items)
    ov.save_model(graph, str(tmp / "model.xml"), compress_to_fp16=False)


def agreement(reference: np.ndarray, scores: np.ndarray, top: int = 10) -> dict[str, float]:
    """How closely ``scores`` follow ``reference`` (fp32's): Spearman correlation, the overlap
    of their top ``top`` items, and the largest absolute difference."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    got = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(ref) < 2:
        return {
            "spearman": 1.0,
            "top_overlap": 1.0,
            "max_abs_diff": float(np.abs(ref - got).max(initial=0)),
        }

    def ranks(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        out[np.argsort(x, kind="stable")] = np.arange(len(x))
        return out

    ra, rb = ranks(ref), ranks(got)
    sa, sb = ra.std(), rb.std()
    rho = float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb)) if sa and sb else 1.0
    n = min(top, len(ref))
    overlap = len(set(np.argsort(-ref)[:n]) & set(np.argsort(-got)[:n])) / n
    return {"spearman": rho, "top_overlap": overlap, "max_abs_diff": float(np.abs(ref - got).max())}


# ----- run ---------------------------------------------------------------------------------------
class CompiledReranker:
    """A cached body graph (ONNX Runtime or OpenVINO) plus the numpy head; no torch."""

    def __init__(
        self,
        folder: Path,
        precision: str,
        batch_size: int = 16,
        max_batch_tokens: int = 8192,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        meta = json.loads((folder / META_FILE).read_text())
        self.folder, self.precision = folder, precision
        self.name = name or str(meta["reranker"])
        self.max_length = int(meta["max_length"])
        self.pad_id = int(meta["pad_id"])
        self.activation = str(meta["activation"])
        self.kind = str(meta["head"])
        self.agreement = meta.get("agreement")
        self.precision_note: str | None = None
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        with np.load(folder / HEAD_FILE, allow_pickle=False) as head:
            self.w1, self.b1, self.w2, self.b2 = (head[k] for k in ("w1", "b1", "w2", "b2"))
        self._tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length, strategy="longest_first")
        self._lock = threading.Lock()
        if precision == "ov-int8":
            from ..backends.openvino import compile_model

            self._compiled = compile_model(
                folder / "model.xml", threads, precision, folder / "compiled"
            )
            self._request = self._compiled.create_infer_request()
            self._session = None
        else:
            from ..backends.onnx import make_session

            self._session = make_session(folder / "model.onnx", threads)

    def _hidden(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self._session is not None:
            return np.asarray(self._session.run(None, feeds)[0])
        with self._lock:  # an infer request serves one caller at a time
            self._request.infer(feeds)
            return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)

    def _head(self, first: np.ndarray) -> np.ndarray:
        h = np.tanh(first.astype(np.float32) @ self.w1.T + self.b1)
        return (h @ self.w2.T + self.b2)[:, 0]

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        from ..backends.base import batches

        if not passages:
            return np.zeros(0, dtype=np.float64)
        encs = self._tok.encode_batch([(query, p) for p in passages])
        logits = np.zeros(len(encs), dtype=np.float64)
        for batch in batches([len(e.ids) for e in encs], self.batch_size, self.max_batch_tokens):
            width = max(len(encs[i].ids) for i in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = len(encs[i].ids)
                ids[row, :n], types[row, :n], mask[row, :n] = encs[i].ids, encs[i].type_ids, 1
            hidden = self._hidden(
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            logits[batch] = self._head(hidden[:, 0])
        return _activate(logits, self.activation)
