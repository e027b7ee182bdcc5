"""The ONNX Runtime backend: ``onnx-fp32`` (also the light query encoder) and ``onnx-int8``.

Built once per model into ``$BETO_SEARCH_CACHE/onnx/<key>/`` (see base.fingerprint): the Hugging
Face BertModel is exported (legacy TorchScript exporter, opset 17, dynamic batch/sequence axes, the
additive attention mask built inside the graph), for ``onnx-int8`` quantized with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel, activations
dynamically, every weight MatMul except the FFN output projections, which stay fp32; measured on
the real all-MiniLM-L6-v2 over corpora/es: mean cosine 0.9965 / top-10 overlap 0.919 to torch
fp32), then optimised by ONNX Runtime once (the ORT_ENABLE_EXTENDED level: attention, GELU and
LayerNorm fusions) and saved as ``model.onnx`` with its weights in ``model.onnx.data``, beside the
tokenizer. The torch model is freed as soon as the graph is written.

Loading is what a cold CLI query pays, so it is made cheap (full-size BETO fp32, 2 cores): the
weights are an external file that ORT maps instead of parsing (session 1.05 s -> 0.43 s), graph
optimisation is not redone on load, and a ``fast_start`` session skips the weight pre-packing
(0.43 s -> 0.03 s; a query then costs ~0.11 s instead of ~0.04 s), switching to a pre-packed
session from the third call on, for long-lived processes.
"""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .base import (
    META_FILE,
    CompiledEncoder,
    build_atomically,
    cache_root,
    check_pooling,
    cpu_threads,
    fingerprint,
    pool,
    write_export_facts,
)

log = logging.getLogger(__name__)

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17
# kinds of weight MatMul left fp32 under int8 (see matmul_names); the FFN output is the most
# sensitive one
KEEP_FP32 = ("ffn_out",)
INT8_SETTINGS = {
    "per_channel": True,
    "reduce_range": False,
    "weight_type": "QInt8",
    "op_types": ["MatMul"],
    "keep_fp32": list(KEEP_FP32),
}
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
PRECISIONS = ("onnx-fp32", "onnx-int8")
LIBRARIES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime")
INSTALL = "pip install 'beto-search[onnx]'"
FAST_START_CALLS = 2  # calls served by the un-prepacked session before switching


def require_onnxruntime(precision: str = "onnx-int8") -> Any:
    """The onnxruntime module, or an InputError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError(f"precision {precision} needs onnxruntime: {INSTALL}") from None
    return onnxruntime


def _require_onnx(precision: str) -> Any:
    try:
        import onnx
    except ImportError:
        raise InputError(
            f"precision {precision} needs onnx to build its model: {INSTALL}"
        ) from None
    return onnx


# ----- export / quantize / optimise --------------------------------------------------------------
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
                w,
                (ids, mask, torch.zeros_like(ids)),
                str(out),
                input_names=INPUTS,
                output_names=["last_hidden_state"],
                dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*INPUTS, "last_hidden_state"]},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        bert.train(was_training)
    return out


def matmul_names(path: Path, which: str) -> list[str]:
    """Names of the weight MatMuls of one kind: 'ffn_out', 'attn_out', 'ffn_in', 'qkv'."""
    onnx = _require_onnx("onnx-int8")
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


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quantize(
    src: Path,
    out: Path,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: str = "QInt8",
    exclude: tuple[str, ...] = KEEP_FP32,
) -> Path:
    """Dynamic int8 quantization of ``src``'s MatMuls, the kinds in ``exclude`` kept fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n for kind in exclude for n in matmul_names(src, kind)]
    # quantize_dynamic advises, on the root logger, a shape-inference pre-processing step
    advice = _DropMessage("Please consider to run pre-processing")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(src),
            str(out),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=getattr(QuantType, weight_type),
            nodes_to_exclude=nodes,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": TensorProto.FLOAT},  # for fused com.microsoft ops
        )
    finally:
        root.removeFilter(advice)
    return Path(out)


def optimise(src: Path, out: Path) -> Path:
    """Save ORT's portable (EXTENDED level) optimisation of ``src``, weights in an external file."""
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", out.name + ".data"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return out


def make_session(
    path: Path,
    threads: int | None = None,
    spinning: bool = False,
    prepack: bool = True,
    optimise_on_load: bool = False,
) -> Any:
    """A CPU InferenceSession: ``threads`` intra-op threads (default: the CPUs we may use)."""
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or cpu_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimise_on_load
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # idle ORT threads must not busy-wait: they would steal the cores from torch / FAISS
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def input_positions(names: list[str]) -> list[tuple[str, int]]:
    """(graph input name, position in INPUTS) for each input of a graph built by ``export_onnx``.

    The export names its inputs explicitly (``input_names=INPUTS``); a name outside INPUTS means a
    graph this module did not build, which fails here with a clear message instead of later.
    """
    unknown = [n for n in names if n not in INPUTS]
    if unknown:
        raise InputError(
            f"the cached ONNX graph has unexpected inputs ({', '.join(unknown)}); delete "
            f"{cache_root() / 'onnx'} to rebuild it."
        )
    return [(n, INPUTS.index(n)) for n in names]


# ----- cache -------------------------------------------------------------------------------------
def settings(precision: str) -> dict[str, Any]:
    base = {"precision": precision, "opset": OPSET, "optimised": "extended", "format": 2}
    return {**base, **INT8_SETTINGS} if precision == "onnx-int8" else base


def cache_folder(model: str, revision: str | None, precision: str) -> Path:
    """Where the graph of ``model`` at ``precision`` is (or will be) cached."""
    return cache_root() / "onnx" / fingerprint(model, revision, settings(precision), LIBRARIES)


def is_built(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (MODEL_FILE, META_FILE, "tokenizer.json"))


def build(model: str, revision: str | None, precision: str, folder: Path) -> Path:
    """Export (and quantize) ``model`` into ``folder`` atomically; the torch model is freed."""
    from .hf import load_for_export

    _require_onnx(precision)

    def run(tmp: Path) -> None:
        source = load_for_export(model, revision, precision)
        raw = export_onnx(source.transformer.model, tmp / "raw" / "model.onnx")
        write_export_facts(source, tmp, precision)
        del source
        gc.collect()  # the torch weights go before ORT loads its copy
        if precision == "onnx-int8":
            raw = quantize(
                raw,
                tmp / "raw" / "model_int8.onnx",
                exclude=KEEP_FP32,
                per_channel=bool(INT8_SETTINGS["per_channel"]),
                reduce_range=bool(INT8_SETTINGS["reduce_range"]),
                weight_type=str(INT8_SETTINGS["weight_type"]),
            )
        optimise(raw, tmp / MODEL_FILE)
        for p in sorted((tmp / "raw").iterdir()):
            p.unlink()
        (tmp / "raw").rmdir()

    log.info("building the %s graph of %s into %s", precision, model, folder)
    return build_atomically(folder, run, is_built)


# ----- encoding ----------------------------------------------------------------------------------
class OnnxEncoder(CompiledEncoder):
    """An ORT session over a cached graph plus numpy pooling (no torch).

    ``fast_start``: the first ``FAST_START_CALLS`` calls run on a session without weight
    pre-packing (it loads ~15x faster, runs ~3x slower), later ones on a pre-packed session.
    """

    def __init__(
        self,
        folder: Path,
        pooling: str | None = None,
        precision: str = "onnx-fp32",
        batch_size: int = 16,
        max_batch_tokens: int = 4096,
        threads: int | None = None,
        fast_start: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(folder, pooling, precision, batch_size, max_batch_tokens, name)
        self.path = folder / MODEL_FILE
        self.threads = threads
        self._calls = 0 if fast_start else FAST_START_CALLS
        self._lock = threading.Lock()
        self.session = make_session(self.path, threads, prepack=not fast_start)
        self._inputs = input_positions([i.name for i in self.session.get_inputs()])

    def _feed(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The ONNX Runtime inputs under the names ``export_onnx`` gave them explicitly (an input
        the exporter dropped as unused is simply not fed)."""
        values = [ids, mask, np.zeros_like(ids)]
        return {name: values[i] for name, i in self._inputs}

    def embed_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._calls == FAST_START_CALLS:
                self.session = make_session(self.path, self.threads)
            self._calls += 1
        hidden = self.session.run(None, self._feed(ids, mask))[0]
        return pool(hidden, mask, self.pooling)


def open_onnx(
    model: str,
    *,
    pooling: str | None = None,
    precision: str = "onnx-fp32",
    device: str = "cpu",
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    revision: str | None = None,
    threads: int | None = None,
    fast_start: bool = False,
) -> OnnxEncoder:
    """The ONNX Runtime encoder of ``model``, building its graph first when it is not cached."""
    if precision not in PRECISIONS:
        raise InputError(f"the ONNX backend runs {', '.join(PRECISIONS)}, not '{precision}'.")
    require_onnxruntime(precision)  # before loading anything
    if device == "cuda":
        raise InputError(
            f"precision {precision} runs on the CPU only; use --device cpu or bf16/fp16."
        )
    if pooling is not None:
        check_pooling(pooling, precision)
    folder = cache_folder(model, revision, precision)
    if not is_built(folder):
        build(model, revision, precision, folder)
    return OnnxEncoder(
        folder, pooling, precision, batch_size, max_batch_tokens, threads, fast_start, name=model
    )
