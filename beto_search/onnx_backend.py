"""ONNX Runtime int8 backend for ``BetoEncoder`` (``precision="onnx-int8"``).

The Hugging Face BertModel is exported once to ONNX (legacy TorchScript exporter, opset 17,
dynamic batch/sequence axes, the additive attention mask built inside the graph) and quantized
with ``onnxruntime.quantization.quantize_dynamic``: int8 weights per output channel, activations
dynamically, every weight MatMul except the FFN output projections (3072 -> 768 in BERT-base),
which stay fp32. Measured on the real all-MiniLM-L6-v2 over corpora/es (benchmarks/onnx_int8.py):
mean cosine 0.9965 / top-10 overlap 0.919 to torch fp32, against 0.987 / 0.854 for torch int8.

The quantized file is cached under ``$BETO_SEARCH_CACHE/onnx/<key>/model_int8.onnx`` (default
``~/.cache/beto-search``), keyed by the model, its weights, the library versions and these
settings, and written atomically, so it is built once. Pooling (mean / max / cls over the attention
mask) and L2 normalisation run in numpy with the same semantics as the torch path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17
# kinds of weight MatMul left fp32 (see matmul_names); the FFN output is the most sensitive one
KEEP_FP32 = ("ffn_out",)
SETTINGS = {"per_channel": True, "reduce_range": False, "weight_type": "QInt8",
            "op_types": ["MatMul"], "keep_fp32": list(KEEP_FP32), "opset": OPSET, "format": 1}
MODEL_FILE = "model_int8.onnx"
POOLINGS = ("mean", "max", "cls")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
INSTALL = "pip install 'beto-search[onnx]'"


def require_onnxruntime() -> Any:
    """The onnxruntime module, or an InputError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError(f"precision onnx-int8 needs onnxruntime: {INSTALL}") from None
    return onnxruntime


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise InputError(f"precision onnx-int8 needs onnx to build its model: {INSTALL}") from None
    return onnx


def cache_root() -> Path:
    """``$BETO_SEARCH_CACHE`` or ``~/.cache/beto-search``."""
    env = os.environ.get("BETO_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "beto-search"


# ----- export / quantize -------------------------------------------------------------------------
def export_onnx(bert: Any, out: Path, opset: int = OPSET) -> Path:
    """Export a HF BertModel's last_hidden_state to ONNX with dynamic batch and sequence axes."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            h = self.m.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            ext = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
            return self.m.encoder(h, attention_mask=ext).last_hidden_state

    _require_onnx()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = bert.training
    bert.eval()
    w = Wrapped(bert).eval()  # eval() on the wrapper too: export restores the wrapper's mode
    ids = torch.randint(5, 1000, (2, 16))
    ids.clamp_(max=int(bert.config.vocab_size) - 1)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                w, (ids, mask, torch.zeros_like(ids)), str(out), input_names=INPUTS,
                output_names=["last_hidden_state"],
                dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*INPUTS, "last_hidden_state"]},
                opset_version=opset, dynamo=False,
            )
    finally:
        bert.train(was_training)
    return out


def matmul_names(path: Path, which: str) -> list[str]:
    """Names of the weight MatMuls of one kind: 'ffn_out', 'attn_out', 'ffn_in', 'qkv'."""
    onnx = _require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    if which == "ffn_out":
        return [n for n in names if n.endswith("/output/dense/MatMul") and "attention" not in n]
    if which == "attn_out":
        return [n for n in names if n.endswith("attention/output/dense/MatMul")]
    if which == "ffn_in":
        return [n for n in names if n.endswith("intermediate/dense/MatMul")]
    if which == "qkv":
        return [n for n in names if n.split("/")[-2] in ("query", "key", "value")]
    raise ValueError(which)


def quantize(src: Path, out: Path, per_channel: bool = True, reduce_range: bool = False,
             weight_type: str = "QInt8", exclude: tuple[str, ...] = KEEP_FP32) -> Path:
    """Dynamic int8 quantization of ``src``'s MatMuls, the kinds in ``exclude`` kept fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n for kind in exclude for n in matmul_names(src, kind)]
    root = logging.getLogger()
    root.addFilter(_no_preprocess_advice)
    try:
        quantize_dynamic(
            str(src), str(out), per_channel=per_channel, reduce_range=reduce_range,
            weight_type=getattr(QuantType, weight_type), nodes_to_exclude=nodes,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": TensorProto.FLOAT},  # for fused com.microsoft ops
        )
    finally:
        root.removeFilter(_no_preprocess_advice)
    return Path(out)


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop quantize_dynamic's root-logger advice to run its shape-inference pre-processing."""
    return not str(record.msg).startswith("Please consider to run pre-processing")


def make_session(path: Path, threads: int | None = None, spinning: bool = False) -> Any:
    """A CPU InferenceSession: ``threads`` intra-op threads (default torch's), one inter-op."""
    ort = require_onnxruntime()
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle ORT threads must not busy-wait: they would steal the cores from torch / FAISS
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ----- cache -------------------------------------------------------------------------------------
def _weights_fingerprint(model_name: str) -> list[Any]:
    """(relative path, size, mtime) of a local folder's weight files; [] for a hub id."""
    folder = Path(model_name).expanduser()
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"):
            st = p.stat()
            out.append([str(p.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return out


def cache_key(model_name: str, revision: str | None, config_json: str) -> str:
    """sha256 of the model identity, its weights, the library versions and the settings."""
    import onnxruntime
    import torch

    folder = Path(model_name).expanduser()
    facts = {
        "model": str(folder.resolve()) if folder.is_dir() else model_name,
        "revision": revision,
        "weights": _weights_fingerprint(model_name),
        "config": hashlib.sha256(config_json.encode()).hexdigest(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "settings": SETTINGS,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def build_int8_model(bert: Any, out: Path) -> Path:
    """Export ``bert`` and quantize it to ``out``, atomically (temporary folder, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        raw = export_onnx(bert, tmp / "model.onnx")
        q = quantize(raw, tmp / MODEL_FILE, per_channel=SETTINGS["per_channel"],
                     reduce_range=SETTINGS["reduce_range"], weight_type=SETTINGS["weight_type"],
                     exclude=KEEP_FP32)
        if any(p.name not in ("model.onnx", MODEL_FILE) for p in tmp.iterdir()):
            # external data files would not survive the rename of one file; not expected < 2 GB
            raise InputError(f"the quantized ONNX model of this size is not supported ({out}).")
        os.replace(q, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cached_int8_model(bert: Any, model_name: str, revision: str | None) -> Path:
    """The cached quantized model for this BertModel, built first if it is not there."""
    key = cache_key(model_name, revision, bert.config.to_json_string(use_diff=False))
    path = cache_root() / "onnx" / key / MODEL_FILE
    if path.is_file():
        return path
    log.info("building the onnx-int8 model of %s into %s", model_name, path.parent)
    return build_int8_model(bert, path)


# ----- encoding ----------------------------------------------------------------------------------
def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Masked mean / max, or the first token, of (batch, seq, dim) hidden states."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(bool)
    if mode == "max":
        return np.where(m, hidden, -np.inf).max(axis=1)
    if mode == "mean":
        mf = m.astype(hidden.dtype)
        return (hidden * mf).sum(axis=1) / np.maximum(mf.sum(axis=1), 1e-9)
    check_pooling(mode, "onnx-int8")
    raise AssertionError(mode)  # unreachable: check_pooling raised


def check_pooling(pooling: str, precision: str) -> None:
    """Compiled backends pool in numpy: mean, max or cls."""
    if pooling not in POOLINGS:
        raise InputError(
            f"precision {precision} supports pooling {', '.join(POOLINGS)}, not '{pooling}'.")


class OnnxInt8Backend:
    """An ORT session over the quantized model plus the encoder's pooling."""

    def __init__(self, path: Path, pooling: str, threads: int | None = None) -> None:
        check_pooling(pooling, "onnx-int8")
        self.path = Path(path)
        self.pooling = pooling
        self.session = make_session(self.path, threads)

    @classmethod
    def for_model(cls, bert: Any, model_name: str, revision: str | None, pooling: str,
                  threads: int | None = None) -> OnnxInt8Backend:
        if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder")):
            raise InputError(f"precision onnx-int8 needs a BERT-like model; '{model_name}' is a "
                             f"{type(bert).__name__}.")
        return cls(cached_int8_model(bert, model_name, revision), pooling, threads)

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Pooled (not yet normalised) vectors of one padded batch (special tokens included)."""
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        return pool(hidden, mask, self.pooling)
