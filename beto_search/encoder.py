"""The ``Encoder`` protocol and ``BetoEncoder``: BETO through sentence-transformers.

``BetoEncoder`` builds ``Transformer -> Pooling(mean|max|cls) -> Normalize`` (or loads a saved
sentence-transformers folder), then encodes its own way: texts are tokenized once, sorted by
length and cut into batches under a padded-token budget, and run under ``torch.inference_mode``
with the requested precision (fp32, bf16 autocast where the hardware supports it, int8 dynamic
quantization of the Linear layers, fp16 on CUDA), or through ONNX Runtime int8 (``onnx-int8``,
see onnx_backend.py) or OpenVINO static int8 (``ov-int8``, see openvino_backend.py). Outputs are
L2-normalised float32.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "dccuchile/bert-base-spanish-wwm-uncased"
POOLINGS = ("mean", "max", "cls")
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "onnx-int8", "ov-int8")
DEVICES = ("auto", "cpu", "cuda")


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into normalised float32 vectors of a fixed dimension."""

    name: str
    dimension: int

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def quantize_int8(model: Any, keep_fp32: tuple[str, ...] = INT8_KEEP_FP32,
                  per_channel: bool = True) -> Any:
    """Dynamic int8 quantization of ``model``'s Linear layers, in place.

    Weights are quantized per output channel (per-tensor scales lose too much on BERT), activations
    dynamically per batch; layers named in ``keep_fp32`` ("intermediate_output": the FFN output
    projection, "attention_output", "pooler") stay fp32.
    """
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

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


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else (or an existing path) is a folder."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


def _load_failure(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    how = (
        "pass --model PATH (or BETO_SEARCH_MODEL) with a local folder, or save a copy on a connected "
        "machine with SentenceTransformer('" + DEFAULT_MODEL + "').save('beto') and copy that folder here"
    )
    why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if offline else (
        f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
    )
    return ModelLoadError(f"Could not load the model '{name}' as a local folder or from the Hugging "
                          f"Face hub ({why}); {how}.")


class BetoEncoder:
    """BETO (or any BERT) as a sentence encoder with masked mean/max/cls pooling."""

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
        if pooling is not None and pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not '{pooling}'.")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'.")
        if device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, not '{device}'.")
        if batch_size < 1 or max_batch_tokens < 1:
            raise InputError("batch size and batch token budget must be at least 1.")
        if precision == "onnx-int8":
            from .onnx_backend import require_onnxruntime

            require_onnxruntime()  # before loading anything
            if device == "cuda":
                raise InputError("precision onnx-int8 runs on the CPU only; use --device cpu or bf16/fp16.")
            device = "cpu"
        if precision == "ov-int8":
            from .openvino_backend import require_openvino

            require_openvino()  # before loading anything
            if device == "cuda":
                raise InputError("precision ov-int8 runs on the CPU only; use --device cpu or bf16/fp16.")
            device = "cpu"
        self._onnx: Any = None
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        self._torch_device = self._pick_device(device)
        self._model = self._load(self.model_name, pooling, revision)
        self._apply_precision()

    # ----- loading -------------------------------------------------------------------------
    @staticmethod
    def _pick_device(device: str) -> str:
        import torch

        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
        return device

    def _load(self, name: str, pooling: str | None, revision: str | None) -> Any:
        import transformers
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter
        path = Path(name).expanduser()
        if _looks_like_path(name) and not path.is_dir():
            raise ModelLoadError(
                f"The model folder '{name}' does not exist; pass --model with a folder holding a "
                f"BERT model (config.json, weights, vocab.txt) or a saved sentence-transformers model."
            )
        try:
            if (path / "modules.json").is_file():
                st = SentenceTransformer(str(path), device=self._torch_device, trust_remote_code=False)
                current = next((m for m in st if isinstance(m, Pooling)), None)
                have = current.get_config_dict()["pooling_mode"] if current is not None else None
                if pooling is None or have == pooling:
                    self.pooling = have or "mean"
                    self.revision = "local"
                    return st
                transformer = st[0]
            else:
                transformer = Transformer(
                    str(path) if path.is_dir() else name,
                    model_kwargs={"revision": revision} if revision else None,
                    processor_kwargs={"revision": revision} if revision else None,
                    config_kwargs={"revision": revision} if revision else None,
                )
        except ModelLoadError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
            raise _load_failure(name, exc) from None
        self.pooling = pooling or "mean"
        config = transformer.model.config
        self.revision = revision or getattr(config, "_commit_hash", None) or (
            "local" if path.is_dir() else "unknown"
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
        if self.precision in ("int8", "onnx-int8", "ov-int8") and self._torch_device != "cpu":
            raise InputError(f"precision {self.precision} runs on the CPU only; use --device cpu or "
                             f"bf16/fp16.")
        if self.precision == "int8":
            quantize_int8(self.transformer.model)
        self._model.eval()
        if self.precision in ("onnx-int8", "ov-int8"):
            from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

            extra = [type(m).__name__ for m in list(self._model)[1:]
                     if not isinstance(m, (Pooling, Normalize))]
            if extra:
                raise InputError(f"precision {self.precision} supports Transformer -> Pooling -> "
                                 f"Normalize models; '{self.model_name}' also has {', '.join(extra)}.")
        if self.precision == "onnx-int8":
            from .onnx_backend import OnnxInt8Backend

            self._onnx = OnnxInt8Backend.for_model(
                self.transformer.model, self.model_name, self.revision, self.pooling)
        if self.precision == "ov-int8":
            from .openvino_backend import OpenVinoInt8Backend

            # self._onnx: the encoder's non-torch backend: embed(ids, mask) -> pooled vectors
            self._onnx = OpenVinoInt8Backend.for_model(
                self.transformer.model, self.tokenizer, self.max_seq_length, self.model_name,
                self.revision, self.pooling)

    # ----- facts ---------------------------------------------------------------------------
    @property
    def transformer(self) -> Any:
        """The sentence-transformers Transformer module (the BERT and its tokenizer)."""
        return self._model[0]

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (used by the chunker too)."""
        return self.transformer.tokenizer

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length or 512)

    @property
    def device(self) -> str:
        return self._torch_device

    # ----- encoding ------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, truncated to fit the model's window."""
        enc = self.tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=True,
            max_length=self.max_seq_length - 2,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in enc["input_ids"]]

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """Embeddings of passages: (n, dimension) float32, L2-normalised."""
        return self.encode_token_ids(self.tokenize(texts))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embeddings of queries (BETO is symmetric: same as documents)."""
        return self.encode_token_ids(self.tokenize(texts))

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped by length so that padded tokens per batch stay under the budget."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        out: list[list[int]] = []
        current: list[int] = []
        for i in order:
            width = lengths[current[0]] if current else lengths[i]
            if current and (
                len(current) >= self.batch_size or (len(current) + 1) * width > self.max_batch_tokens
            ):
                out.append(current)
                current = []
            current.append(i)
        if current:
            out.append(current)
        return out

    def padded_batches(
        self, seqs: list[list[int]], pad: int
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """(indices, int64 ids, int64 attention mask) per length-sorted batch, padded with ``pad``."""
        for batch in self.batches([len(s) for s in seqs]):
            width = max(len(seqs[i]) for i in batch)
            ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            yield batch, ids, mask

    def encode_token_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embeddings from token ids without special tokens (as the chunker produces them)."""
        import torch

        n = len(token_ids)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        tok = self.tokenizer
        limit = self.max_seq_length - 2
        seqs = [[tok.cls_token_id, *ids[:limit], tok.sep_token_id] for ids in token_ids]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for batch, ids, mask in self.padded_batches(seqs, pad):
            if self._onnx is not None:
                out[batch] = self._onnx.embed(ids, mask)
                continue
            features = {
                "input_ids": torch.from_numpy(ids).to(self._torch_device),
                "attention_mask": torch.from_numpy(mask).to(self._torch_device),
                "token_type_ids": torch.zeros(ids.shape, dtype=torch.long, device=self._torch_device),
            }
            with torch.inference_mode(), self._autocast():
                emb = self._model(features)["sentence_embedding"]
            out[batch] = emb.float().cpu().numpy()
        return normalize_rows(out)

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.precision == "bf16":
            return torch.autocast(self._torch_device, dtype=torch.bfloat16)
        if self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        """The encoder facts an index's manifest records."""
        return {
            "encoder": self.name,
            "revision": self.revision,
            "pooling": self.pooling,
            "dimension": self.dimension,
            "max_length": self.max_seq_length,
            "normalized": True,
            "precision": self.precision,
        }
