"""The torch backend: BETO (or any BERT) through sentence-transformers, fp32 / bf16 / fp16 / int8.

``BetoEncoder`` builds ``Transformer -> Pooling(mean|max|cls) -> Normalize`` (or loads a saved
sentence-transformers folder) and embeds the padded batches of ``BatchEncoder`` under
``torch.inference_mode`` at the requested precision: fp32, bf16 autocast where the hardware has
native bf16, int8 dynamic quantization of the Linear layers (per channel, the FFN output kept
fp32), fp16 autocast on CUDA. It is also the model the compiled backends export from
(``hf.load_for_export``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import DEFAULT_MODEL, DEVICES, POOLINGS, cpu_supports_bf16
from ..errors import InputError, ModelLoadError
from .base import BatchEncoder, looks_like_path
from .factory import open_encoder
from .hf import load_failure, quiet_loading, resolve_hub_id

TORCH_PRECISIONS = ("fp32", "bf16", "fp16", "int8")

# Linear layers whose qualified name ends with one of these stay fp32 under int8: the FFN output
# projection (3072 -> 768 in BERT-base) is the most sensitive one. Measured on the real
# all-MiniLM-L6-v2 over corpora/es (benchmarks/quality.py): per-tensor int8 of every Linear gives
# mean cosine 0.88 to fp32, per-channel 0.97, per-channel with the FFN output kept fp32 0.99.
INT8_KEEP_FP32 = ("intermediate_output",)


def _int8_keeps(name: str, keep: tuple[str, ...]) -> bool:
    if "intermediate_output" in keep and name.endswith("output.dense") and "attention" not in name:
        return True
    if "attention_output" in keep and name.endswith("attention.output.dense"):
        return True
    return "pooler" in name and "pooler" in keep


def quantize_int8(
    model: Any, keep_fp32: tuple[str, ...] = INT8_KEEP_FP32, per_channel: bool = True
) -> Any:
    """Dynamic int8 quantization of ``model``'s Linear layers, in place.

    Weights are quantized per output channel (per-tensor scales lose too much on BERT), activations
    dynamically per batch; layers named in ``keep_fp32`` ("intermediate_output": the FFN output
    projection, "attention_output", "pooler") stay fp32.
    """
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
    )

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {
        name: qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not _int8_keeps(name, keep_fp32)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    return model


def pick_device(device: str) -> str:
    """'cpu' or 'cuda' for a requested device ('auto' picks CUDA when there is one)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device cpu."
        )
    return device


class BetoEncoder(BatchEncoder):
    """BETO (or any BERT) as a sentence encoder with masked mean/max/cls pooling, through torch.

    For backwards compatibility ``BetoEncoder(model, precision="onnx-int8" | "ov-int8" | ...)``
    returns the encoder of ``backends.open_encoder`` for that precision.
    """

    def __new__(
        cls,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        pooling: str | None = None,
        precision: str = "fp32",
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if cls is BetoEncoder and precision not in TORCH_PRECISIONS:
            names = ("device", "batch_size", "max_batch_tokens", "revision")
            kwargs.update(zip(names, args))
            return open_encoder(model, pooling=pooling, precision=precision, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        pooling: str | None = None,
        precision: str = "fp32",
        device: str = "auto",
        batch_size: int = 16,
        max_batch_tokens: int = 4096,
        revision: str | None = None,
    ) -> None:
        if getattr(self, "_model", None) is not None:
            return  # built by open_encoder in __new__ (e.g. precision="auto" chose a torch one)
        if pooling is not None and pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not '{pooling}'.")
        if precision not in TORCH_PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(TORCH_PRECISIONS)}, not '{precision}'."
            )
        if device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, not '{device}'.")
        if batch_size < 1 or max_batch_tokens < 1:
            raise InputError("batch size and batch token budget must be at least 1.")
        self.model_name = self.name = str(model)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        # a hub id is checked first (one short request), before torch is even imported
        name = self.model_name
        hub = not looks_like_path(name) and not Path(name).expanduser().is_dir()
        source = resolve_hub_id(name, revision) if hub else name
        self._torch_device = pick_device(device)
        self.device = self._torch_device
        self._model = self._load(name, pooling, revision, source)
        self._apply_precision()
        tok = self.tokenizer
        self.max_length = int(self._model.max_seq_length or 512)
        self.cls_id, self.sep_id = int(tok.cls_token_id), int(tok.sep_token_id)
        self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else 0

    # ----- loading -------------------------------------------------------------------------
    def _load(self, name: str, pooling: str | None, revision: str | None, source: str) -> Any:
        """``name``'s model; ``source``: where to read it (``name``, or a hub id's cached
        snapshot when the hub cannot be reached)."""
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )

        path = Path(name).expanduser()
        if looks_like_path(name) and not path.is_dir():
            raise ModelLoadError(
                f"The model folder '{name}' does not exist; pass --model with a folder holding a "
                f"BERT model (config.json, weights, vocab.txt) or a saved sentence-transformers model."
            )
        try:
            with quiet_loading():
                if (path / "modules.json").is_file():
                    st = SentenceTransformer(
                        str(path), device=self._torch_device, trust_remote_code=False
                    )
                    current = next((m for m in st if isinstance(m, Pooling)), None)
                    have = (
                        current.get_config_dict()["pooling_mode"] if current is not None else None
                    )
                    if pooling is None or have == pooling:
                        self.pooling = have or "mean"
                        self.revision = "local"
                        return st
                    transformer: Any = st[0]
                else:
                    if path.is_dir():
                        source = str(path)
                    kw = {"revision": revision} if revision and source == name else None
                    transformer = Transformer(
                        source,
                        model_kwargs=kw,
                        processor_kwargs=kw,
                        config_kwargs=kw,
                    )
        except ModelLoadError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
            raise load_failure(name, exc) from None
        self.pooling = pooling or "mean"
        config = transformer.model.config
        self.revision = (
            revision
            or getattr(config, "_commit_hash", None)
            or ("local" if path.is_dir() else None)
            or (Path(source).name if source != name else "unknown")  # a cached snapshot's commit
        )
        pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=self.pooling)
        return SentenceTransformer(
            modules=[transformer, pool, Normalize()], device=self._torch_device
        )

    def _apply_precision(self) -> None:
        if self.precision == "fp16" and self._torch_device != "cuda":
            raise InputError("precision fp16 needs a CUDA GPU; on the CPU use bf16 or int8.")
        if self.precision == "bf16" and self._torch_device == "cpu" and not cpu_supports_bf16():
            raise InputError(
                "precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this one "
                "lacks; use int8 or fp32."
            )
        if self.precision == "int8" and self._torch_device != "cpu":
            raise InputError("precision int8 runs on the CPU only; use --device cpu or bf16/fp16.")
        if self.precision == "int8":
            quantize_int8(self.transformer.model)
        self._model.eval()

    # ----- facts ---------------------------------------------------------------------------
    @property
    def transformer(self) -> Any:
        """The sentence-transformers Transformer module (the BERT and its tokenizer)."""
        return self._model[0]

    @property
    def st_model(self) -> Any:
        """The sentence-transformers model itself (for comparisons with a raw ``encode``)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (used by the chunker too)."""
        return self.transformer.tokenizer

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    def extra_modules(self) -> list[str]:
        """Names of the modules besides Transformer -> Pooling -> Normalize (e.g. Dense)."""
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
        )

        return [
            type(m).__name__
            for m in list(self._model)[1:]
            if not isinstance(m, (Pooling, Normalize))
        ]

    # ----- encoding ------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, truncated to fit the model's window."""
        enc = self.tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=True,
            max_length=self.max_length - 2,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in enc["input_ids"]]

    def embed_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        dev = self._torch_device
        features = {
            "input_ids": torch.from_numpy(ids).to(dev),
            "attention_mask": torch.from_numpy(mask).to(dev),
            "token_type_ids": torch.zeros(ids.shape, dtype=torch.long, device=dev),
        }
        with torch.inference_mode(), self._autocast():
            emb = self._model(features)["sentence_embedding"]
        return emb.float().cpu().numpy()

    def _autocast(self) -> Any:
        import torch

        if self.precision == "bf16":
            return torch.autocast(self._torch_device, dtype=torch.bfloat16)
        if self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()


TorchEncoder = BetoEncoder
