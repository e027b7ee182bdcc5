"""The model a run trains and what it writes: the index's own model loaded for training, its
features and embeddings, atomic checkpoints (model, optimizer, RNG and loop state; resumed by
fingerprint), and the finished sentence-transformers folder with its card."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InputError, ModelLoadError
from .options import CHECKPOINT, LOG_NAME, METHOD_NAMES, TrainReport, WorseModelError

if TYPE_CHECKING:
    from ...index.manifest import Manifest

log = logging.getLogger(__name__)


# ----- the index's own model -------------------------------------------------------------------
def load_start_model(manifest: Manifest, device: str) -> Any:
    """The index's model as a trainable SentenceTransformer (Transformer -> Pooling -> Normalize):
    a private fp32 torch copy built the way the index builds its encoder (``open_encoder``)."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    from ...backends import open_encoder

    if manifest.tokenizer != "model":
        raise InputError(
            "the index was built with a custom encoder, which beto-search cannot train; "
            "build it with a model folder or hub id (--model)."
        )
    revision = manifest.revision if manifest.revision not in (None, "local", "unknown") else None
    enc = open_encoder(
        manifest.encoder,
        pooling=manifest.pooling,
        precision="fp32",
        device=device,
        revision=revision,
    )
    model = getattr(enc, "st_model", None)
    if model is None:  # fp32 is always the torch backend; guard against a future change
        raise ModelLoadError(f"could not load the index's model '{manifest.encoder}' to train it.")
    if not any(isinstance(m, Normalize) for m in model):
        model.append(Normalize())  # the index's vectors are normalised; so are the trained ones
    return model


def features(model: Any, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Tokenized, padded tensors on the model's device (what the modules' forward takes)."""
    tok = model[0].tokenizer
    enc = tok(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    out = {
        k: v.to(model.device)
        for k, v in enc.items()
        if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    if "token_type_ids" not in out:
        import torch

        out["token_type_ids"] = torch.zeros_like(out["input_ids"])
    return out


def embed(model: Any, texts: Sequence[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """Normalised float32 embeddings (eval mode, no gradients), longest texts batched together."""
    import torch

    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            emb = model(features(model, [texts[j] for j in idx], max_length))["sentence_embedding"]
            out[idx] = emb.float().cpu().numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


# ----- checkpoints -----------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    out: Path,
    module: Any,
    optimizer: Any,
    scaler: Any,
    state: dict[str, Any],
    best: dict[str, Any] | None,
) -> None:
    """Write model, optimizer, RNG and loop state to OUT/checkpoint atomically (tmp + rename)."""
    import torch
    from safetensors.torch import save_file, save_model

    tmp, final, old = out / f"{CHECKPOINT}.tmp", out / CHECKPOINT, out / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(module, str(tmp / "model.safetensors"))
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
    opt = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    slots: dict[str, dict[str, Any]] = {}
    for pid, slot in opt["state"].items():
        slots[str(pid)] = {}
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                slots[str(pid)][key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = s
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {
        **state,
        "param_groups": opt["param_groups"],
        "slots": slots,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    (tmp / "state.json").write_text(json.dumps(meta, default=float))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(out)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path, fingerprint: str) -> Path | None:
    """The usable checkpoint folder for this fingerprint (a stale one is dropped), or None."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        folder = out / name
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if state.get("fingerprint") == fingerprint:
            return folder
        log.warning("ignoring the checkpoint in %s: it was written with other settings", folder)
        return None
    return None


def restore(
    folder: Path, module: Any, optimizer: Any, scaler: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    import torch
    from safetensors.torch import load_file, load_model

    load_model(module, str(folder / "model.safetensors"))
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, slot in meta["slots"].items():
        opt_state[int(pid)] = dict(slot)
    for key, value in tensors.items():
        if key.startswith("rng."):
            continue
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    best = (
        load_file(str(folder / "best.safetensors"))
        if (folder / "best.safetensors").exists()
        else None
    )
    return meta, best


# ----- writing the model -----------------------------------------------------------------------
def write_model(model: Any, out: Path, max_seq_length: int, card: str) -> None:
    """Save a sentence-transformers folder into ``out`` (beside the log), card as README.md."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.max_seq_length = max_seq_length
    from ...backends.torch import quiet_loading

    with quiet_loading():  # no "Writing model shards" bar in the command's output
        model.save(str(tmp))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    names = sorted(p.name for p in tmp.iterdir())
    # modules.json last: a folder without it is not a loadable model
    for name in [n for n in names if n != "modules.json"] + ["modules.json"]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    shutil.rmtree(tmp, ignore_errors=True)


def model_card(report: TrainReport, manifest: Manifest, n_chunks: int, extra: str = "") -> str:
    """The README.md of a trained folder: base model, method, data, steps, time, before/after."""

    def row(name: str) -> str:
        b, a = report.before.get(name), report.after.get(name)
        if b is None or a is None:
            return f"| {name} | - | - | - |"
        return f"| {name} | {b:.4f} | {a:.4f} | {a - b:+.4f} |"

    opts = report.options
    return "\n".join(
        [
            "---",
            "library_name: sentence-transformers",
            "pipeline_tag: sentence-similarity",
            "tags: [beto-search, sentence-transformers, spanish, retrieval]",
            "---",
            f"# {Path(report.out).name}: `beto-search {report.command}` of {Path(report.base_model).name}",
            "",
            (
                f"- Base model: `{report.base_model}` (pooling {manifest.pooling}, normalised, "
                f"max length {manifest.max_length})."
            ),
            f"- Method: {report.method}: {METHOD_NAMES.get(report.method, report.method)}.",
            (
                f"- Data: {report.examples} training examples; the index holds {n_chunks} chunks"
                + (
                    f", of which a uniform sample of {report.chunks_sampled} was read."
                    if 0 < report.chunks_sampled < n_chunks
                    else "."
                )
            ),
            (
                f"- Steps: {report.steps} of {report.planned_steps} planned (batch {opts.get('batch_size')}, "
                f"lr {opts.get('lr')}, max length {opts.get('max_length')}, seed {opts.get('seed')}); "
                f"{report.epochs_done:.2f} epochs; stopped: {report.stopped}."
            ),
            f"- Training time: {report.seconds / 60:.1f} minutes"
            + (f" (resumed at step {report.resumed_from})." if report.resumed_from else "."),
            f"- Check: {report.check} ({report.check_queries} queries), document level:",
            "",
            "| metric | before | after | change |",
            "|---|---:|---:|---:|",
            row("ndcg@10"),
            row("recall@10"),
            "",
            extra,
            (
                "Load it with `beto-search ingest ... --model THIS_FOLDER` (or re-embed an index with it). "
                f"The training log is `{LOG_NAME}` (JSON lines)."
            ),
            "",
        ]
    )


def finish(
    report: TrainReport,
    model: Any,
    out: Path,
    manifest: Manifest,
    n_chunks: int,
    extra: str = "",
) -> TrainReport:
    """Refuse a worse model (unless forced), else write it with its card; drop the checkpoint."""
    b, a = report.before.get("ndcg@10"), report.after.get("ndcg@10")
    if b is not None and a is not None and a < b and not report.options.get("force"):
        raise WorseModelError(
            f"the trained model scores worse than the starting one on {report.check} (nDCG@10 "
            f"{a:.4f} < {b:.4f}), so nothing was written to {out}; use --force to write it anyway."
        )
    write_model(
        model,
        out,
        int(manifest.max_length or model.max_seq_length),
        model_card(report, manifest, n_chunks, extra),
    )
    report.written = True
    (out / "training_report.json").write_text(json.dumps(report.to_dict(), indent=1))
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return report


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder for the model.")
    if (out / "modules.json").exists() and not (out / CHECKPOINT).exists() and not force:
        raise InputError(f"{out} already holds a model; choose another --out or pass --force.")
    if (out / "modules.json").exists() and force and not (out / CHECKPOINT).exists():
        (out / "modules.json").unlink()  # retrain from scratch (the log restarts)
        (out / LOG_NAME).unlink(missing_ok=True)
