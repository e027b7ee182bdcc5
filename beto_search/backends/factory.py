"""``open_encoder``: the encoder for a precision, from the ``FACTORIES`` table.

    torch     fp32, bf16, fp16, int8        sentence-transformers under torch (backends/torch.py)
    onnx      onnx-fp32, onnx-int8          ONNX Runtime over a cached graph (backends/onnx.py)
    openvino  ov-int8, ov-bf16              OpenVINO over a cached graph (backends/openvino.py)

The table names each backend's factory as a ``"module:function"`` string, imported on first use
(as ``formats.FORMATS`` names its readers): a backend is imported only when an encoder of its
precision is built, and this module imports none of them, so any backend may call
``open_encoder`` (the torch backend's ``BetoEncoder(precision="onnx-int8")``, the compiled
backends' export source) without an import cycle.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from ..encoder import CONCRETE_PRECISIONS, DEFAULT_MODEL, DEVICES, POOLINGS, PRECISIONS
from ..errors import InputError

log = logging.getLogger(__name__)

# precision -> "module:function" (a module of this package); every function takes the model
# and open_encoder's keyword arguments (pooling, precision, device, batch_size,
# max_batch_tokens, revision)
FACTORIES: dict[str, str] = {
    "fp32": "torch:BetoEncoder",
    "bf16": "torch:BetoEncoder",
    "fp16": "torch:BetoEncoder",
    "int8": "torch:BetoEncoder",
    "onnx-fp32": "onnx:open_onnx",
    "onnx-int8": "onnx:open_onnx",
    "ov-int8": "openvino:open_openvino",
    "ov-bf16": "openvino:open_openvino",
}
assert set(FACTORIES) == set(CONCRETE_PRECISIONS)
# the light query encoder (``queries_only``): a compiled graph run without torch
QUERY_FACTORY = "query:open_query_encoder"


def resolve(target: str) -> Any:
    """The function a ``"module:function"`` string of this package names (imported now)."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


def open_encoder(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    pooling: str | None = None,
    precision: str = "fp32",
    device: str = "auto",
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    revision: str | None = None,
    queries_only: bool = False,
) -> Any:
    """A ``TokenEncoder`` for ``model`` at ``precision`` ("auto": chosen for this machine).

    ``queries_only``: the encoder will only embed queries, so a light runtime without torch is
    used when one is installed (its graph built once with torch and cached).
    """
    if pooling is not None and pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not '{pooling}'.")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'.")
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, not '{device}'.")
    model = str(model)
    note = None
    if precision == "auto":
        from .auto import choose_precision

        precision, note = choose_precision(device)
        log.info("precision %s (%s)", precision, note)
    if queries_only:
        light = resolve(QUERY_FACTORY)(
            model, pooling=pooling, precision=precision, device=device, revision=revision
        )
        if light is not None:
            return light
    enc = resolve(FACTORIES[precision])(
        model,
        pooling=pooling,
        precision=precision,
        device=device,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        revision=revision,
    )
    if note is not None:
        enc.precision_note = note
    return enc


__all__ = ["FACTORIES", "open_encoder"]
