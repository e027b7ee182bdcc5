"""The OpenVINO backend: ``ov-int8`` (static int8) and ``ov-bf16`` (bf16 inference on AMX/AVX512-BF16).

Built once per model into ``$BETO_SEARCH_CACHE/openvino/<key>/`` (see base.fingerprint): the
Hugging Face BertModel is converted with ``openvino.convert_model`` (dynamic batch and sequence
axes, one output: last_hidden_state); for ``ov-int8`` it is quantized with NNCF post-training
quantization (``model_type=TRANSFORMER``): weights AND activations int8, activation ranges
calibrated on the Spanish texts shipped with the package (``beto_search/data/calibration_es.txt``),
so the same model always gives the same graph. Measured by benchmarks/openvino_int8.py: 2.3-3x
faster than torch fp32 for documents; mean cosine 0.993-0.996 and top-10 overlap 0.913-0.929 to
fp32 on the real all-MiniLM-L6-v2. The tokenizer is saved beside the graph and the torch model is
freed once the graph is written; compiled blobs are cached (``CACHE_DIR``) for fast reloads.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
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
MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "calibration_es.txt"
# every calibration text is used (subset_size >= their number); one unpadded sequence per item
INT8_SETTINGS: dict[str, Any] = {
    "model_type": "TRANSFORMER",
    "subset_size": 300,
    "preset": "default",
    "calibration_batch": 1,
}
PRECISIONS = ("ov-int8", "ov-bf16")
LIBRARIES = ("torch", "transformers", "sentence-transformers", "openvino", "nncf")
INSTALL = "pip install 'beto-search[openvino]'"


def require_openvino(precision: str = "ov-int8") -> Any:
    """The openvino module (nncf checked too for int8), or an InputError saying how to install."""
    missing = InputError(f"precision {precision} needs OpenVINO: {INSTALL}")
    try:
        import openvino
    except ImportError:
        raise missing from None
    if precision == "ov-int8" and importlib.util.find_spec("nncf") is None:  # slow import: later
        raise missing
    return openvino


def calibration_texts(path: Path = CALIBRATION) -> list[str]:
    """The shipped Spanish calibration texts, one per non-empty line."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----- quiet build -------------------------------------------------------------------------------
class _Forward(logging.Handler):
    """Passes NNCF's warnings and errors on to our logger (stderr in the CLI), drops the rest."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            log.log(record.levelno, "nncf: %s", record.getMessage())


class _DropCudaHome(logging.Filter):
    """torch.utils.cpp_extension says, on import, that a CPU-only torch has no CUDA runtime."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _import_nncf_quietly() -> Any:
    """``import nncf`` without its import-time "NNCF initialized successfully" on stdout.

    NNCF's logger must be created by NNCF itself (its own Logger class), so it cannot be muted
    before the import: stdout is redirected for the import alone (NNCF's stdout handler then keeps
    that buffer, and its later messages, outside ``quiet_build``, go nowhere).
    """
    if "nncf" in sys.modules:
        return sys.modules["nncf"]
    with contextlib.redirect_stdout(io.StringIO()):
        import nncf
    return nncf


@contextlib.contextmanager
def quiet_build(nncf: bool = False) -> Iterator[None]:
    """Silence what converting (and, with ``nncf``, quantizing) prints that tells a user nothing.

    NNCF logs INFO to *stdout* through its own handler and draws rich progress bars there
    ("Statistics collection ━━━ 100%"), which broke ``ingest --json``: its handlers are swapped
    for one that forwards warnings and errors to our logger, and rich's console is muted. The
    converter's tracing makes transformers warn about a training loss (``loss_type=None``);
    nncf's import of torch.utils.cpp_extension warns about CUDA on a CPU-only torch. All of
    that is put back afterwards (but TOKENIZERS_PARALLELISM: see below).
    """
    import transformers

    # OpenVINO's telemetry (openvino-telemetry) forks a sender process per event, in a background
    # thread, after the build too; in each child the tokenizers library warns that it was forked
    # after using threads, unless this is set. Left set for the process (unless the user chose).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cuda = _DropCudaHome()
    cpp = logging.getLogger("torch.utils.cpp_extension")
    cpp.addFilter(cuda)
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    console = None
    nncf_log, handlers, propagate = None, [], True
    forward = _Forward()
    try:
        if nncf:
            _import_nncf_quietly()
            import rich  # NNCF's progress bars (a dependency of nncf)

            console = rich.get_console()
            nncf_log = logging.getLogger("nncf")
            handlers, propagate = list(nncf_log.handlers), nncf_log.propagate
            for h in handlers:
                nncf_log.removeHandler(h)
            nncf_log.addHandler(forward)
            nncf_log.propagate = False
        quiet = console.quiet if console is not None else False
        if console is not None:
            console.quiet = True
        try:
            yield
        finally:
            if console is not None:
                console.quiet = quiet
    finally:
        if nncf_log is not None:
            nncf_log.removeHandler(forward)
            for h in handlers:
                nncf_log.addHandler(h)
            nncf_log.propagate = propagate
        transformers.utils.logging.set_verbosity(verbosity)
        cpp.removeFilter(cuda)


# ----- convert / quantize ------------------------------------------------------------------------
def convert(bert: Any) -> Any:
    """``bert``'s last_hidden_state as an openvino.Model with dynamic batch and sequence axes."""
    import openvino as ov
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    was_training = bert.training
    bert.eval()
    ids = torch.randint(5, 1000, (2, 16))
    ids.clamp_(max=int(bert.config.vocab_size) - 1)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            model = ov.convert_model(
                LastHidden(bert).eval(),
                example_input=example,
                input=[(k, ov.PartialShape([-1, -1]), ov.Type.i64) for k in INPUTS],
            )
    finally:
        bert.train(was_training)
    # The inputs come in INPUTS' order (forward's), but their tensor names are the converter's
    # choice: with transformers 4.45 the mask is called '55'. Name them ourselves.
    for port, name in zip(model.inputs, INPUTS):
        port.get_tensor().set_names({name})
    return model


def calibration_items(
    tokenizer: Any, max_length: int, texts: list[str] | None = None
) -> list[dict[str, np.ndarray]]:
    """One unpadded batch-1 feature dict per calibration text (special tokens included)."""
    texts = calibration_texts() if texts is None else texts
    enc = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    out = []
    for seq in enc["input_ids"]:
        ids = np.array([seq], dtype=np.int64)
        out.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
        )
    return out


def quantize(model: Any, items: list[dict[str, np.ndarray]]) -> Any:
    """NNCF static int8 post-training quantization (weights and activations) of ``model``."""
    import nncf

    # by position (``convert`` keeps INPUTS' order), not by the graph's tensor names
    dataset = nncf.Dataset(items, lambda d: tuple(d[k] for k in INPUTS))
    return nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=min(int(INT8_SETTINGS["subset_size"]), len(items)),
    )


# ----- cache -------------------------------------------------------------------------------------
def settings(precision: str, calibration: Path = CALIBRATION) -> dict[str, Any]:
    """What the cached graph depends on besides the model (``ov-bf16`` uses the fp32 graph)."""
    import hashlib

    if precision == "ov-int8":
        return {
            "graph": "int8",
            **INT8_SETTINGS,
            "format": 2,
            "calibration": hashlib.sha256(calibration.read_bytes()).hexdigest(),
        }
    return {"graph": "fp32", "format": 2}


def cache_folder(
    model: str, revision: str | None, precision: str, calibration: Path = CALIBRATION
) -> Path:
    """Where the graph of ``model`` at ``precision`` is (or will be) cached."""
    key = fingerprint(model, revision, settings(precision, calibration), LIBRARIES)
    return cache_root() / "openvino" / key


def is_built(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (MODEL_FILE, WEIGHTS_FILE, META_FILE))


def build(model: str, revision: str | None, precision: str, folder: Path) -> Path:
    """Convert (and quantize) ``model`` into ``folder`` atomically; the torch model is freed."""
    import openvino as ov

    from .hf import load_for_export

    def run(tmp: Path) -> None:
        source = load_for_export(model, revision, precision)
        with quiet_build():
            graph = convert(source.transformer.model)
        items = (
            calibration_items(source.tokenizer, source.max_length)
            if precision == "ov-int8"
            else None
        )
        write_export_facts(source, tmp, precision)
        del source
        gc.collect()
        if items is not None:
            with quiet_build(nncf=True):
                graph = quantize(graph, items)
        ov.save_model(graph, str(tmp / MODEL_FILE), compress_to_fp16=False)

    log.info("building the %s graph of %s into %s", precision, model, folder)
    return build_atomically(folder, run, is_built)


def compile_model(
    path: Path,
    threads: int | None = None,
    precision: str = "ov-int8",
    cache_dir: Path | None = None,
) -> Any:
    """The model compiled for the CPU with ``threads`` inference threads."""
    import openvino as ov

    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": int(threads or cpu_threads()),
        "PERFORMANCE_HINT": "LATENCY",
    }
    if precision == "ov-bf16":  # (OpenVINO's default on bf16 CPUs too; said explicitly here)
        config["INFERENCE_PRECISION_HINT"] = "bf16"
    core = ov.Core()
    if cache_dir is not None:
        core.set_property({"CACHE_DIR": str(cache_dir)})
    return core.compile_model(str(path), "CPU", config)


# ----- encoding ----------------------------------------------------------------------------------
class OpenVinoEncoder(CompiledEncoder):
    """A compiled OpenVINO model plus numpy pooling (no torch)."""

    def __init__(
        self,
        folder: Path,
        pooling: str | None = None,
        precision: str = "ov-int8",
        batch_size: int = 16,
        max_batch_tokens: int = 4096,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(folder, pooling, precision, batch_size, max_batch_tokens, name)
        self.path = folder / MODEL_FILE
        self.compiled = compile_model(self.path, threads, precision, folder / "compiled")
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request serves one caller at a time

    def embed_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._lock:
            # by position: INPUTS' order, whatever names an older build gave the inputs
            self._request.infer([ids, mask, np.zeros_like(ids)])
            hidden = np.array(self._request.get_output_tensor(0).data, dtype=np.float32)
        return pool(hidden, mask, self.pooling)


def open_openvino(
    model: str,
    *,
    pooling: str | None = None,
    precision: str = "ov-int8",
    device: str = "cpu",
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    revision: str | None = None,
    threads: int | None = None,
) -> OpenVinoEncoder:
    """The OpenVINO encoder of ``model``, building its graph first when it is not cached."""
    if precision not in PRECISIONS:
        raise InputError(f"the OpenVINO backend runs {', '.join(PRECISIONS)}, not '{precision}'.")
    require_openvino(precision)  # before loading anything
    if device == "cuda":
        raise InputError(
            f"precision {precision} runs on the CPU only; use --device cpu or bf16/fp16."
        )
    if precision == "ov-bf16":
        from ..encoder import cpu_supports_bf16

        if not cpu_supports_bf16():
            raise InputError(
                "precision ov-bf16 needs a CPU with native bf16 (AVX512-BF16 or "
                "AMX), which this one lacks; use ov-int8 or fp32."
            )
    if pooling is not None:
        check_pooling(pooling, precision)
    folder = cache_folder(model, revision, precision)
    if not is_built(folder):
        build(model, revision, precision, folder)
    return OpenVinoEncoder(
        folder, pooling, precision, batch_size, max_batch_tokens, threads, name=model
    )
