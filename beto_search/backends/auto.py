"""``--precision auto``: the fastest precision that keeps quality on the hardware at hand.

Measured with the real all-MiniLM-L6-v2 on corpora/es + corpora/es-dev against torch fp32
(benchmarks/quality.py, benchmarks/ingest.py; figures in docs/speed.md). On an AMX + VNNI CPU:
ov-int8 nDCG@10 -0.003 (a gain) and ~5.9x raw fp32 ingest; onnx-int8 lost 0.029, torch int8
0.010, ov-bf16 0.007; onnx-fp32 loses nothing at 1.15-2x torch fp32. The rule:

- a CUDA GPU (device auto or cuda): bf16 where the GPU supports it (fp32's range, tensor cores),
  else fp16;
- a CPU with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX) and OpenVINO:
  ``ov-int8`` (static int8);
- a CPU with AMX bf16 tiles, without OpenVINO: torch ``bf16`` autocast (measured on a quiet
  Sapphire Rapids: 2.8x raw fp32 ingest against 0.8x for onnx-fp32, and nDCG@10 -0.0001, mean
  cosine 1.0000 to fp32; ov-int8 was 3.9x in the same run);
- otherwise (e.g. AVX2 only) ONNX Runtime ``onnx-fp32`` with its transformer fusions when
  installed (int8 gains little without VNNI), else torch ``fp32``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def describe_cpu(flags: set[str] | None = None) -> str:
    """'AMX + AVX512-BF16 + AVX-512 VNNI' style summary of what matters here."""
    flags = cpu_flags() if flags is None else flags
    named = [
        ("amx_int8", "AMX"),
        ("avx512_bf16", "AVX512-BF16"),
        ("avx512_vnni", "AVX-512 VNNI"),
        ("avx_vnni", "AVX-VNNI"),
        ("avx512f", "AVX-512"),
        ("avx2", "AVX2"),
    ]
    have = [label for flag, label in named if flag in flags]
    return " + ".join(have) or "no AVX2"


def _has_cuda() -> bool:
    if not Path("/proc/driver/nvidia").exists():  # cheap: no torch import on GPU-less machines
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_precision(
    device: str = "auto", flags: set[str] | None = None, have_cuda: bool | None = None
) -> tuple[str, str]:
    """(concrete precision, one-sentence reason) for this machine.

    ``BETO_SEARCH_PRECISION`` (a concrete precision) overrides the choice, e.g. to keep every
    machine of a cluster on the same numbers.
    """
    from ..encoder import CONCRETE_PRECISIONS

    forced = os.environ.get("BETO_SEARCH_PRECISION")
    if forced in CONCRETE_PRECISIONS:
        return forced, f"auto: BETO_SEARCH_PRECISION is {forced}"
    if device != "cpu" and (have_cuda if have_cuda is not None else _has_cuda()):
        import torch

        if torch.cuda.is_bf16_supported():
            return (
                "bf16",
                "auto: a CUDA GPU with bf16 support, bf16 autocast (cosine >= 0.999 to fp32)",
            )
        return "fp16", "auto: a CUDA GPU, fp16 autocast"
    flags = cpu_flags() if flags is None else flags
    cpu = describe_cpu(flags)
    ov = importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")
    if any(f in flags for f in INT8_DOT) and ov:
        return "ov-int8", (
            f"auto: the CPU ({cpu}) has int8 dot-product instructions, so OpenVINO "
            f"static int8 (ov-int8) is the fastest precision within the quality "
            f"margin"
        )
    if "amx_bf16" in flags:
        return "bf16", (
            f"auto: the CPU ({cpu}) has AMX bf16 tiles"
            + ("" if ov else " and OpenVINO is not installed")
            + ", so torch bf16 autocast (2.8x raw fp32 ingest here, same nDCG@10 as fp32)"
        )
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        why = (
            "has int8 dot-product instructions but OpenVINO is not installed "
            "(pip install 'beto-search[openvino]' for ov-int8)"
            if any(f in flags for f in INT8_DOT)
            else "lacks int8 dot-product instructions (int8 would gain little and lose quality)"
        )
        return "onnx-fp32", (
            f"auto: the CPU ({cpu}) {why}, so ONNX Runtime fp32 with fused "
            f"attention (onnx-fp32), same quality as fp32"
        )
    return "fp32", f"auto: the CPU ({cpu}) and the installed runtimes leave torch fp32"
