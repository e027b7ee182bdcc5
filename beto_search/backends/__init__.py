"""Encoder backends and ``open_encoder``: one factory per precision.

    torch     fp32, bf16, fp16, int8        sentence-transformers under torch (backends/torch.py)
    onnx      onnx-fp32, onnx-int8          ONNX Runtime over a cached graph (backends/onnx.py)
    openvino  ov-int8, ov-bf16              OpenVINO over a cached graph (backends/openvino.py)

``precision="auto"`` picks one for the hardware at hand (backends/auto.py). With
``queries_only=True`` the encoder returned never imports torch once its graph is cached: the
ONNX Runtime fp32 graph (the index's own int8 graph for an ``onnx-int8`` / ``ov-int8`` index),
tokenized with ``tokenizers``; see backends/query.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..encoder import CONCRETE_PRECISIONS, DEFAULT_MODEL, DEVICES, POOLINGS, PRECISIONS
from ..errors import InputError

log = logging.getLogger(__name__)


def _torch(model: str, **kw: Any) -> Any:
    from .torch import BetoEncoder

    return BetoEncoder(model, kw.pop("pooling"), kw.pop("precision"), **kw)


def _onnx(model: str, **kw: Any) -> Any:
    from .onnx import open_onnx

    return open_onnx(model, **kw)


def _openvino(model: str, **kw: Any) -> Any:
    from .openvino import open_openvino

    return open_openvino(model, **kw)


FACTORIES: dict[str, Callable[..., Any]] = {
    "fp32": _torch,
    "bf16": _torch,
    "fp16": _torch,
    "int8": _torch,
    "onnx-fp32": _onnx,
    "onnx-int8": _onnx,
    "ov-int8": _openvino,
    "ov-bf16": _openvino,
}
assert set(FACTORIES) == set(CONCRETE_PRECISIONS)


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
        from .query import open_query_encoder

        light = open_query_encoder(
            model, pooling=pooling, precision=precision, device=device, revision=revision
        )
        if light is not None:
            return light
    enc = FACTORIES[precision](
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
