"""Encoder backends and ``open_encoder``: one factory per precision (``factory.FACTORIES``).

    torch     fp32, bf16, fp16, int8        sentence-transformers under torch (backends/torch.py)
    onnx      onnx-fp32, onnx-int8          ONNX Runtime over a cached graph (backends/onnx.py)
    openvino  ov-int8, ov-bf16              OpenVINO over a cached graph (backends/openvino.py)

``precision="auto"`` picks one for the hardware at hand (backends/auto.py). With
``queries_only=True`` the encoder returned never imports torch once its graph is cached: the
ONNX Runtime fp32 graph (the index's own int8 graph for an ``onnx-int8`` / ``ov-int8`` index),
tokenized with ``tokenizers``; see backends/query.py. ``hf`` holds the Hugging Face loading
helpers every backend shares. Importing this package imports no backend.
"""

from __future__ import annotations

from .factory import FACTORIES, open_encoder

__all__ = ["FACTORIES", "open_encoder"]
