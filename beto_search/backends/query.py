"""The light query encoder: a cached graph under ONNX Runtime (or OpenVINO), no torch.

A query costs milliseconds; a cold CLI query used to cost seconds of importing torch and
sentence-transformers and loading the model. Here the index's query encoder is the model's
graph, exported once (at the first query, or ahead of time by ``prepare_query_graph`` at
ingest) into the cache (backends/base.py: keyed by the model's identity and weights and the
library versions), tokenized with ``tokenizers`` from the ``tokenizer.json`` saved beside it.

Which graph: the index's own compiled graph for ``onnx-int8``, ``ov-int8`` and ``ov-bf16``
indexes (the same numbers as its documents), the ONNX Runtime fp32 graph otherwise (fp32 is the
reference the torch precisions approximate, so queries lose nothing). On CUDA, or without
onnxruntime, the caller falls back to the full encoder.
"""

from __future__ import annotations

import importlib.util
from typing import Any

QUERY_GRAPH = {"onnx-int8": "onnx-int8", "ov-int8": "ov-int8", "ov-bf16": "ov-bf16"}


def query_precision(precision: str) -> str:
    """The graph precision queries of an index built at ``precision`` run at."""
    return QUERY_GRAPH.get(precision, "onnx-fp32")


def open_query_encoder(
    model: str, *, pooling: str | None, precision: str, device: str, revision: str | None = None
) -> Any | None:
    """The light query encoder, or None where it does not apply (CUDA asked, runtime absent)."""
    if device == "cuda":
        return None
    graph = query_precision(precision)
    if graph.startswith("ov-"):
        if importlib.util.find_spec("openvino") is None:
            return None
        from .openvino import open_openvino

        return open_openvino(
            model, pooling=pooling, precision=graph, revision=revision, batch_size=8
        )
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    from .onnx import open_onnx

    # fast_start: a CLI query runs once; a long-lived process switches to a pre-packed session
    return open_onnx(
        model, pooling=pooling, precision=graph, revision=revision, batch_size=8, fast_start=True
    )


def prepare_query_graph(model: str, precision: str, revision: str | None = None) -> None:
    """Build the query graph of an index now (at ingest) so that the first query is fast."""
    graph = query_precision(precision)
    if graph.startswith("ov-"):
        from . import openvino as backend
    else:
        from . import onnx as backend  # type: ignore[no-redef]
    folder = backend.cache_folder(model, revision, graph)
    if not backend.is_built(folder):
        backend.build(model, revision, graph, folder)
