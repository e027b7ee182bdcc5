"""The torch reranker: a sentence-transformers ``CrossEncoder`` loaded like the encoder (a hub
id or a local folder, ``trust_remote_code`` off, a one-sentence ``ModelLoadError``), scoring
under ``torch.inference_mode`` (fp32; bf16 / fp16 under autocast). ``load_cross_encoder`` is
also what ``compiled.build`` exports from.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import cpu_supports_bf16
from ..errors import InputError, ModelLoadError

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")


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
    from ..backends.base import looks_like_path
    from ..backends.hf import load_failure, quiet_loading
    from ..backends.torch import pick_device

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


def max_length_of(ce: Any) -> int:
    """The CrossEncoder's token window (``max_seq_length`` since sentence-transformers 6,
    ``max_length`` before)."""
    n = ce.max_seq_length if hasattr(type(ce), "max_seq_length") else ce.max_length
    return int(n or 512)


def activation_of(ce: Any) -> str:
    """'sigmoid' or 'identity': the CrossEncoder's activation on its logits."""
    import torch

    act = getattr(ce, "activation_fn", None)
    if act is None or isinstance(act, torch.nn.Identity):
        return "identity"
    if isinstance(act, torch.nn.Sigmoid):
        return "sigmoid"
    return type(act).__name__


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
        from ..backends.torch import pick_device

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
        self.max_length = max_length_of(self.model)
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
