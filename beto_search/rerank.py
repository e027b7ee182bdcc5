"""The rerank stage: a cross-encoder rescoring (query, passage) pairs, at several precisions.

``open_reranker(model, precision)`` loads a sentence-transformers ``CrossEncoder`` (a hub id or
a local folder; the Hugging Face cache and ``HF_HUB_OFFLINE`` apply; ``trust_remote_code`` stays
off) with one relevance score per pair, the same way ``backends.open_encoder`` loads an encoder:

    fp32, bf16, fp16      torch (``CrossEncoder.predict``; bf16/fp16 under autocast)
    onnx-fp32, onnx-int8  ONNX Runtime over the cross-encoder's body, exported and quantized by
                          ``backends/onnx.py`` (``export_onnx``, ``quantize``, ``optimise``)
    ov-int8               OpenVINO static int8 (``backends/openvino.py``: ``convert``,
                          ``quantize``), calibrated on pairs from the shipped Spanish texts
    auto                  what ``backends/auto.py`` picks for the encoder on this machine

The compiled graphs are the model's BERT body (last hidden state, the graph the encoder
backends build); the classification head (BERT's pooler + classifier, or RoBERTa's dense +
out_proj) is a few small matrices applied in numpy to the first token, so the body goes through
exactly the encoder's export and quantization code. A compiled reranker is built once per
model, precision and library versions into ``$BETO_SEARCH_CACHE/rerank/<key>/``; at build time
its scores are checked against the torch fp32 scores of the same model on Spanish pairs (the
quality check of the compiled encoders: agreement with fp32), recorded in the folder's
``reranker.json`` and logged as a warning when the ranking moves (``MIN_AGREEMENT``).

``Searcher.search(..., rerank=...)`` applies a reranker to the best passage of each of the top
``rerank_depth`` documents after fusion; ``SearchEngine.reranker`` keeps loaded rerankers.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .encoder import DEVICES
from .errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")
COMPILED_PRECISIONS = ("onnx-fp32", "onnx-int8", "ov-int8")
RERANK_PRECISIONS = (*TORCH_PRECISIONS, *COMPILED_PRECISIONS)
PRECISIONS = ("auto", *RERANK_PRECISIONS)
DEFAULT_DEPTH = 30
ENV_MODEL = "BETO_SEARCH_RERANKER"  # the model ``--rerank`` without a value uses
META_FILE = "reranker.json"
HEAD_FILE = "head.npz"
TOKENIZER_FILE = "tokenizer.json"
# Spearman correlation of a compiled reranker's scores with fp32's on the check pairs below
# which the build logs a warning (int8 of a real cross-encoder keeps the ranking near 1.0)
MIN_AGREEMENT = 0.95
CHECK_PAIRS = 64


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores (query, passage) pairs: higher means more relevant."""

    name: str
    precision: str

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """One float per passage (float64 array), for ``query``."""
        ...


# ----- loading -----------------------------------------------------------------------------------
def _how() -> str:
    return (
        "give --rerank a local folder holding a sentence-transformers CrossEncoder (or save one "
        "on a connected machine with CrossEncoder('HUB_ID').save('reranker') and copy it here)"
    )


def _check_config(name: str, config: dict[str, Any]) -> None:
    """A cross-encoder is a ...ForSequenceClassification with one label (one relevance score)."""
    arch = [str(a) for a in config.get("architectures") or []]
    if arch and not any(a.endswith("ForSequenceClassification") for a in arch):
        raise ModelLoadError(
            f"The model '{name}' is not a cross-encoder (its config declares {', '.join(arch)}, "
            f"not a ...ForSequenceClassification model); {_how()}."
        )
    labels = config.get("num_labels", len(config.get("id2label") or {}) or None)
    if labels is not None and int(labels) != 1:
        raise ModelLoadError(
            f"The model '{name}' gives {labels} scores per pair, not one relevance score; "
            f"a reranker needs a cross-encoder with one label."
        )


def load_cross_encoder(model: str, device: str = "cpu", revision: str | None = None) -> Any:
    """The torch ``CrossEncoder`` of ``model`` (checked to score pairs with one number), or a
    one-sentence ``ModelLoadError``."""
    from .backends.base import looks_like_path
    from .backends.torch import load_failure, pick_device, quiet_loading

    path = Path(model).expanduser()
    if looks_like_path(model) and not path.is_dir():
        raise ModelLoadError(f"The reranker folder '{model}' does not exist; {_how()}.")
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
        except OSError:
            raise ModelLoadError(
                f"The reranker folder '{model}' holds no config.json, so it is no model; {_how()}."
            ) from None
        except ValueError:
            raise ModelLoadError(
                f"The config.json of the reranker folder '{model}' is not valid JSON; {_how()}."
            ) from None
        _check_config(model, config if isinstance(config, dict) else {})
    torch_device = pick_device(device)
    try:
        from sentence_transformers import CrossEncoder

        with quiet_loading():
            ce = CrossEncoder(
                str(path) if path.is_dir() else model,
                device=torch_device,
                revision=None if path.is_dir() else revision,
                trust_remote_code=False,
            )
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, TypeError) as exc:
        raise load_failure(model, exc, how=_how()) from None
    _check_config(model, ce.model.config.to_dict())
    ce.eval()
    return ce


def _max_length(ce: Any) -> int:
    """The CrossEncoder's token window (``max_seq_length`` since sentence-transformers 6,
    ``max_length`` before)."""
    n = ce.max_seq_length if hasattr(type(ce), "max_seq_length") else ce.max_length
    return int(n or 512)


def _activation(ce: Any) -> str:
    """'sigmoid' or 'identity': the CrossEncoder's activation on its logits."""
    import torch

    act = getattr(ce, "activation_fn", None)
    if act is None or isinstance(act, torch.nn.Identity):
        return "identity"
    if isinstance(act, torch.nn.Sigmoid):
        return "sigmoid"
    return type(act).__name__


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


# ----- torch ---------------------------------------------------------------------------------
class TorchReranker:
    """``CrossEncoder.predict`` (fp32; bf16 / fp16 under autocast)."""

    def __init__(
        self,
        model: str,
        precision: str = "fp32",
        device: str = "auto",
        batch_size: int = 16,
        revision: str | None = None,
    ) -> None:
        from .backends.torch import pick_device
        from .encoder import cpu_supports_bf16

        dev = pick_device(device)
        if precision == "fp16" and dev != "cuda":
            raise InputError("rerank precision fp16 needs a CUDA GPU; on the CPU use fp32.")
        if precision == "bf16" and dev == "cpu" and not cpu_supports_bf16():
            raise InputError(
                "rerank precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which "
                "this one lacks; use fp32 or onnx-fp32."
            )
        self.name, self.precision, self.device = model, precision, dev
        self.batch_size = batch_size
        self.model = load_cross_encoder(model, dev, revision)
        self.max_length = _max_length(self.model)
        self.precision_note: str | None = None

    def _autocast(self) -> Any:
        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device, dtype=torch.bfloat16)
        if self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float64)
        import torch

        with torch.inference_mode(), self._autocast():
            out = self.model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(out, dtype=np.float64).reshape(-1)


# ----- compiled: build -------------------------------------------------------------------------
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
    from .backends.openvino import calibration_texts

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
        from .backends.openvino import settings as ov_settings

        base = ov_settings("ov-int8")
        base["calibration"] = f"pairs:{base['calibration']}"
    else:
        from .backends.onnx import settings as onnx_settings

        base = onnx_settings(precision)
    return {**base, "rerank": 1}


def _libraries(precision: str) -> tuple[str, ...]:
    if precision == "ov-int8":
        from .backends.openvino import LIBRARIES
    else:
        from .backends.onnx import LIBRARIES
    return LIBRARIES


def cache_folder(model: str, revision: str | None, precision: str) -> Path:
    """Where the compiled reranker of ``model`` at ``precision`` is (or will be) cached."""
    from .backends.base import cache_root, fingerprint

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
    from .backends.base import build_atomically

    def run(tmp: Path) -> None:
        import torch

        ce = load_cross_encoder(model, "cpu", revision)
        kind, head = _head(ce)
        activation = _activation(ce)
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
        max_length = _max_length(ce)
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
    from .backends import onnx

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

    from .backends import openvino

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


# ----- compiled: run -----------------------------------------------------------------------------
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
            from .backends.openvino import compile_model

            self._compiled = compile_model(
                folder / "model.xml", threads, precision, folder / "compiled"
            )
            self._request = self._compiled.create_infer_request()
            self._session = None
        else:
            from .backends.onnx import make_session

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
        from .backends.base import batches

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


# ----- the factory -------------------------------------------------------------------------------
def choose_precision(device: str = "auto") -> tuple[str, str]:
    """(rerank precision, reason): the encoder's ``auto`` choice (backends/auto.py), kept when
    the rerank stage runs it and fp32 otherwise."""
    from .backends.auto import choose_precision as encoder_choice

    chosen, why = encoder_choice(device)
    if chosen in RERANK_PRECISIONS:
        return chosen, why
    return "fp32", f"{why}; the rerank stage has no {chosen}, so fp32"


def open_reranker(
    model: str | os.PathLike[str],
    precision: str = "auto",
    device: str = "auto",
    batch_size: int = 16,
    revision: str | None = None,
) -> Reranker:
    """The reranker of ``model`` (a CrossEncoder hub id or folder) at ``precision``."""
    if precision not in PRECISIONS:
        raise InputError(
            f"rerank precision must be one of {', '.join(PRECISIONS)}, not '{precision}'."
        )
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, not '{device}'.")
    if batch_size < 1:
        raise InputError("batch size must be at least 1.")
    name = str(model)
    if not name.strip():
        raise InputError(
            f"no reranker was named; pass --rerank MODEL or set {ENV_MODEL} to a cross-encoder."
        )
    note = None
    if precision == "auto":
        precision, note = choose_precision(device)
        log.info("rerank precision %s (%s)", precision, note)
    reranker: Any
    if precision in TORCH_PRECISIONS:
        reranker = TorchReranker(name, precision, device, batch_size, revision)
    else:
        if device == "cuda":
            raise InputError(
                f"rerank precision {precision} runs on the CPU only; use fp32 or bf16 on a GPU."
            )
        if precision == "ov-int8":
            from .backends.openvino import require_openvino

            require_openvino(precision)
        else:
            from .backends.onnx import require_onnxruntime

            require_onnxruntime(precision)
        path = Path(name).expanduser()
        if path.is_dir():
            name = str(path.resolve())
        folder = cache_folder(name, revision, precision)
        if not is_built(folder, precision):
            build(name, revision, precision, folder)
        reranker = CompiledReranker(folder, precision, batch_size=batch_size, name=str(model))
    reranker.precision_note = note
    return reranker


def rerank_model(model: str | None) -> str:
    """The reranker a bare ``--rerank`` means: ``model``, else ``$BETO_SEARCH_RERANKER``."""
    chosen = model or os.environ.get(ENV_MODEL) or ""
    if not chosen.strip():
        raise InputError(
            f"--rerank needs a model: pass --rerank MODEL (a cross-encoder folder or hub id) or "
            f"set {ENV_MODEL}."
        )
    return chosen


__all__ = [
    "DEFAULT_DEPTH",
    "PRECISIONS",
    "Reranker",
    "agreement",
    "open_reranker",
    "rerank_model",
]
