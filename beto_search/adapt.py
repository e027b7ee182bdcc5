"""``adapt``: teach an index's own model to retrieve its own chunks, without labels.

The model is the one that embedded the index (a sentence-transformers folder, or a plain BERT folder
loaded with the index's pooling). Training examples come from the index's stored chunks only
(``pseudoqueries.py``): inverse cloze (a sentence as query, the rest of its chunk as positive),
independent cropping, inverse cloze with a hard negative mined from the index's lexical side, or
TSDAE (denoising auto-encoder) as a baseline. The contrastive methods use in-batch negatives
(``MultipleNegativesRankingLoss``); a batch never holds two examples of one document, whose
overlapping chunks would be false negatives.

A slice of chunks is held out: their pseudo-queries score the model before and after (nDCG@10 and
Recall@10, document level, as ``eval`` counts), and a model that got worse is not written unless
``force``. Training runs under a time budget with atomic checkpoints (model, optimizer, step, RNG
state): a killed run re-run with the same arguments resumes. The shared loop (``run_training``),
checkpoints, the model loader and the retrieval check are also used by ``train`` (training.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BetoSearchError, InputError, ModelLoadError
from .pseudoqueries import PseudoQuery, crop_pair, make_pseudo_queries

if TYPE_CHECKING:
    from .engine import SearchEngine
    from .manifest import Manifest
    from .store import StoredChunk

log = logging.getLogger(__name__)

METHODS = ("ict", "ict-hard", "crop", "tsdae")
DEFAULT_METHOD = "ict"
METHOD_NAMES = {
    "ict": "inverse cloze (sentence -> rest of its chunk), in-batch negatives, "
    "MultipleNegativesRankingLoss",
    "ict-hard": "inverse cloze plus one hard negative per query from the index's lexical side, "
    "MultipleNegativesRankingLoss",
    "crop": "independent cropping (two random spans of a chunk), in-batch negatives, "
    "MultipleNegativesRankingLoss",
    "mnrl-hard": "labelled pairs with one mined hard negative each, in-batch negatives, "
    "MultipleNegativesRankingLoss, early stopping on a dev split",
    "tsdae": "TSDAE denoising auto-encoder on the chunks' sentences (DenoisingAutoEncoderLoss)",
}
CHECKPOINT = "checkpoint"
LOG_NAME = "training_log.jsonl"
CHECK_CORPUS_MAX = 5000  # chunks scored by the self-check; more are sampled
# Chunks ``adapt`` holds in memory at most: a larger index is read as a stream and a uniform
# sample of this many kept (reservoir sampling, as ``tune`` does). What a kept chunk costs is
# mostly its inverse-cloze examples: one per sentence (~18 in a 510-token BETO chunk), each with
# the chunk minus that sentence as its positive. Measured: ~50 KB per 2,300-character chunk, so
# ~250 MB for 5,000 chunks, whatever the size of the index. 5,000 such chunks give ~90,000
# examples, ~2,800 batches of 32 per epoch: days on a CPU, about an hour on a GPU.
ADAPT_CHUNKS_MAX = 5_000
CROPS_PER_CHUNK = 4


class WorseModelError(BetoSearchError):
    """The trained model scored worse than the starting one on held-out queries."""


@dataclass
class TrainOptions:
    """Settings shared by ``adapt`` and ``train`` (those in the fingerprint decide resuming)."""

    method: str = DEFAULT_METHOD
    max_minutes: float | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    lr: float = 1e-4
    max_length: int = 256  # tokens of positives during training (queries: query_length)
    query_length: int = 64
    warmup: float = 0.1
    checkpoint_minutes: float = 3.0
    force: bool = False
    progress: bool = False
    layers: int | None = None  # adapt: distil a student keeping this many transformer layers
    distil_minutes: float = 2.0  # adapt --layers: the distillation's own time budget
    distil_steps: int | None = None  # adapt --layers: stop the distillation after N steps
    max_chunks: int = ADAPT_CHUNKS_MAX  # adapt: chunks held in memory (a sample of larger indexes)

    def fingerprint(self, extra: dict[str, Any]) -> str:
        keep = {
            k: v
            for k, v in asdict(self).items()
            if k
            not in (
                "max_minutes",
                "max_steps",
                "device",
                "checkpoint_minutes",
                "force",
                "progress",
                # the teacher's training does not depend on the student: a run with --layers
                # resumes (or reuses) the teacher's checkpoint
                "layers",
                "distil_minutes",
                "distil_steps",
                # in the fingerprint only when it samples (adapt adds it): a run on an index
                # below the cap resumes the checkpoints written before the cap existed
                "max_chunks",
            )
        }
        blob = json.dumps({**keep, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainReport:
    """What a run of ``adapt`` or ``train`` did, and where it wrote."""

    out: str
    command: str
    method: str
    base_model: str
    examples: int
    steps: int
    planned_steps: int
    epochs_done: float
    seconds: float
    stopped: str
    before: dict[str, float]
    after: dict[str, float]
    check: str
    check_queries: int
    written: bool
    resumed_from: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    distillation: dict[str, Any] | None = None  # adapt --layers: teacher, student, steps, checks
    index_chunks: int = 0  # chunks in the index
    chunks_sampled: int = 0  # adapt: chunks read into memory (all, or a sample of max_chunks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----- the index's own model -------------------------------------------------------------------
def load_start_model(manifest: Manifest, device: str) -> Any:
    """The index's model as a trainable SentenceTransformer (Transformer -> Pooling -> Normalize):
    a private fp32 torch copy built the way the index builds its encoder (``open_encoder``)."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    from .backends import open_encoder

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


# ----- retrieval check (held-out pseudo-queries, or a labelled dev split) -----------------------
@dataclass
class RetrievalCheck:
    """Queries, their graded relevant documents and a corpus of (doc id, text) passages."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    passages: list[tuple[str, str]]

    def score(self, model: Any, max_length: int) -> dict[str, float]:
        """Document-level nDCG@10 and Recall@10 (a document scores as its best passage)."""
        from .evaluation import EvalSet, Query, score_run

        if not self.queries:
            return {}
        qids = list(self.queries)
        q = embed(model, [self.queries[i] for i in qids], max_length)
        p = embed(model, [t for _, t in self.passages], max_length)
        docs = [d for d, _ in self.passages]
        sims = q @ p.T
        run: dict[str, list[tuple[str, float]]] = {}
        for row, qid in enumerate(qids):
            best: dict[str, float] = {}
            for j in np.argsort(-sims[row]):
                if docs[j] not in best:
                    best[docs[j]] = float(sims[row, j])
                    if len(best) == 10:
                        break
            run[qid] = list(best.items())
        es = EvalSet({k: Query(k, v) for k, v in self.queries.items()}, self.qrels)
        means, _ = score_run(es, run)
        return {"ndcg@10": round(means["ndcg@10"], 4), "recall@10": round(means["recall@10"], 4)}


def cloze_check(held: list[PseudoQuery], chunks: list[Any], seed: int) -> RetrievalCheck:
    """Held-out pseudo-queries against the chunks, with each query's sentence taken out of every
    chunk of its document (overlapping neighbours would otherwise hold it verbatim)."""
    by_doc: dict[str, list[str]] = {}
    for pq in held:
        by_doc.setdefault(pq.doc_id, []).append(pq.query)
    pool = chunks
    if len(pool) > CHECK_CORPUS_MAX:
        keep = [c for c in pool if c.doc_id in by_doc]
        rest = [c for c in pool if c.doc_id not in by_doc]
        random.Random(seed).shuffle(rest)
        pool = keep + rest[: max(0, CHECK_CORPUS_MAX - len(keep))]
    passages = []
    for c in pool:
        text = c.text
        for sentence in by_doc.get(c.doc_id, ()):
            text = text.replace(sentence, " ")
        passages.append((c.doc_id, text))
    return RetrievalCheck(
        {pq.qid: pq.query for pq in held}, {pq.qid: {pq.doc_id: 1} for pq in held}, passages
    )


# ----- batches ---------------------------------------------------------------------------------
def doc_distinct_batches(
    docs: Sequence[str], order: Sequence[int], size: int, open_max: int = 64
) -> list[list[int]]:
    """Cut ``order`` into full batches of ``size`` where no document appears twice (in-batch
    negatives from the same document, e.g. overlapping chunks, would be false negatives).

    An example that fits none of the ``open_max`` open batches belongs to a document that is over-
    represented at that point of the stream: it is skipped (pass several epochs as one ``order`` and
    it comes back later), so that long documents do not turn into many small batches.
    """
    size = max(2, min(size, len(set(docs))))
    out: list[list[int]] = []
    open_: list[tuple[list[int], set[str]]] = []
    for i in order:
        for batch, seen in open_:
            if docs[i] not in seen:
                batch.append(i)
                seen.add(docs[i])
                if len(batch) == size:
                    out.append(batch)
                    open_.remove((batch, seen))
                break
        else:
            if len(open_) < open_max:
                open_.append(([i], {docs[i]}))
    out += [b for b, _ in open_ if len(b) >= 2]
    return out


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


# ----- the training loop -----------------------------------------------------------------------
BatchFn = Callable[[int, list[int]], list[list[str]]]


@dataclass
class LoopResult:
    steps: int
    planned: int
    seconds: float
    stopped: str
    resumed_from: int
    best: dict[str, Any] | None
    evals: list[dict[str, Any]]


def _lr_factor(step: int, planned: int, warmup: float) -> float:
    """Linear warmup then linear decay to zero at ``planned`` steps."""
    warm = max(1, round(planned * warmup))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (planned - step) / max(1, planned - warm))


def run_training(
    out: Path,
    model: Any,
    loss: Any,
    batches: list[list[int]],
    make_batch: BatchFn,
    opts: TrainOptions,
    fingerprint: str,
    lengths: Sequence[int],
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
    patience: int = 2,
) -> LoopResult:
    """Train ``loss`` over ``batches`` (example indices) within the budget, resuming from and
    writing checkpoints in ``out``; ``make_batch(step, indices)`` gives the text columns and
    ``lengths`` the token budget of each column. ``evaluate`` (higher is better) runs every
    ``eval_every`` steps for early stopping; the best weights are returned in ``best``."""
    import torch
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    random.seed(opts.seed)
    np.random.seed(opts.seed % 2**32)
    torch.manual_seed(opts.seed)
    cuda = model.device.type == "cuda"
    amp_dtype = None
    scaler = None
    if cuda:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    params = [p for p in dict.fromkeys(loss.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01)
    planned = min(len(batches), opts.max_steps or len(batches))
    if opts.max_minutes:
        planned = min(planned, 20)  # provisional: the warmup is short until a step is timed
    step, elapsed, resumed_from = 0, 0.0, 0
    best: dict[str, Any] | None = None
    best_score, since_best = -math.inf, 0
    evals: list[dict[str, Any]] = []
    folder = load_checkpoint(out, fingerprint)
    if folder is not None:
        meta, best = restore(folder, loss, optimizer, scaler)
        step, elapsed, planned = meta["step"], meta["elapsed"], meta["planned"]
        best_score, since_best = meta.get("best_score", -math.inf), meta.get("since_best", 0)
        evals = meta.get("evals", [])
        resumed_from = step
        if meta.get("done"):
            return LoopResult(
                step, planned, elapsed, meta.get("stopped", "done"), step, best, evals
            )
    log_path = out / LOG_NAME
    budget = opts.max_minutes * 60 if opts.max_minutes else math.inf
    logf = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in the finally below)

    def write_log(row: dict[str, Any]) -> None:
        logf.write(json.dumps(row) + "\n")
        logf.flush()

    if resumed_from:
        write_log({"event": "resume", "step": step, "elapsed": round(elapsed, 1)})
    else:
        write_log({"event": "start", "planned": planned, "options": asdict(opts)})

    def checkpoint(done: bool, stopped: str = "") -> None:
        save_checkpoint(
            out,
            loss,
            optimizer,
            scaler,
            {
                "fingerprint": fingerprint,
                "step": step,
                "elapsed": elapsed,
                "planned": planned,
                "done": done,
                "stopped": stopped,
                "best_score": best_score,
                "since_best": since_best,
                "evals": evals,
            },
            best,
        )

    bar = tqdm(
        total=planned,
        initial=step,
        desc=f"{opts.method}",
        unit="step",
        disable=not opts.progress,
        dynamic_ncols=True,
    )
    stopped = "all steps done"
    last_ckpt = elapsed
    step_times: list[float] = []
    try:
        model.train()
        while True:
            if step >= min(planned, len(batches)) or (opts.max_steps and step >= opts.max_steps):
                stopped = "all steps done"
                break
            if step_times and elapsed + 0.5 * sorted(step_times)[len(step_times) // 2] >= budget:
                stopped = f"time budget of {opts.max_minutes:g} minutes reached"
                break
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = opts.lr * _lr_factor(step, planned, opts.warmup)
            columns = make_batch(step, batches[step])
            feats = [
                features(model, col, lengths[min(i, len(lengths) - 1)])
                for i, col in enumerate(columns)
            ]
            optimizer.zero_grad(set_to_none=True)
            if amp_dtype is not None:
                with torch.autocast("cuda", dtype=amp_dtype):
                    value = loss(feats, None)
            else:
                value = loss(feats, None)
            if scaler is not None:
                scaler.scale(value).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optimizer)
                scaler.update()
            else:
                value.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            step_times.append(dt)
            loss_value = float(value.detach())
            write_log(
                {
                    "step": step,
                    "loss": round(loss_value, 5),
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed": round(elapsed, 2),
                    "examples": len(batches[step - 1]),
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if len(step_times) in (1, 3) and (math.isfinite(budget) or opts.max_steps):
                # fix the schedule to the steps the budget allows (the lr decays to zero there)
                per_step = sorted(step_times)[len(step_times) // 2]
                fits = (
                    step + int((budget - elapsed) / per_step) if math.isfinite(budget) else planned
                )
                planned = max(step + 1, min(len(batches), fits, opts.max_steps or len(batches)))
                bar.total = planned
                bar.refresh()
                write_log(
                    {"event": "plan", "planned": planned, "seconds_per_step": round(per_step, 2)}
                )
            if evaluate is not None and eval_every and step % eval_every == 0:
                score = evaluate()
                model.train()
                evals.append({"step": step, "score": score})
                write_log({"event": "eval", "step": step, "score": score})
                if score > best_score:
                    best_score, since_best = score, 0
                    best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= patience:
                        stopped = f"early stopping: no dev improvement in {patience} evaluations"
                        break
            if elapsed - last_ckpt >= opts.checkpoint_minutes * 60:
                checkpoint(False)
                last_ckpt = elapsed
        if (
            evaluate is not None
            and (not evals or evals[-1]["step"] != step)
            and not stopped.startswith("early")
        ):
            score = evaluate()
            evals.append({"step": step, "score": score})
            write_log({"event": "eval", "step": step, "score": score})
            if score > best_score:
                best_score = score
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        checkpoint(True, stopped)
        write_log({"event": "end", "step": step, "elapsed": round(elapsed, 1), "stopped": stopped})
    finally:
        bar.close()
        logf.close()
    return LoopResult(step, planned, elapsed, stopped, resumed_from, best, evals)


# ----- writing the model -----------------------------------------------------------------------
def write_model(model: Any, out: Path, max_seq_length: int, card: str) -> None:
    """Save a sentence-transformers folder into ``out`` (beside the log), card as README.md."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.max_seq_length = max_seq_length
    from .backends.torch import quiet_loading

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


def index_chunks(engine: SearchEngine) -> tuple[Manifest, list[StoredChunk]]:
    """The index's manifest and every stored chunk (``engine.iter_chunks``); an empty index is an
    error."""
    manifest = engine.manifest
    chunks = [c for batch in engine.iter_chunks() for c in batch] if manifest else []
    if manifest is None or not chunks:
        raise InputError(f"the index at {engine.folder} holds no chunks; ingest documents first.")
    return manifest, chunks


@dataclass
class ChunkSample:
    """What ``adapt`` reads of an index: a uniform sample of its chunks (all of them when they
    are at most the cap), how many the index holds and its highest chunk id."""

    manifest: Manifest
    chunks: list[StoredChunk]
    total: int
    last_id: int


def sample_index_chunks(engine: SearchEngine, cap: int, seed: int) -> ChunkSample:
    """Stream ``engine.iter_chunks`` and keep a uniform sample of at most ``cap`` chunks
    (reservoir sampling), sorted by chunk id: memory is bounded by ``cap``, not by the index.
    The same index and seed give the same sample (a resumed run trains on the same examples).
    Metadata is dropped from the kept chunks: training reads only their text."""
    from dataclasses import replace

    manifest = engine.manifest
    if cap < 1:
        raise InputError(f"max_chunks must be at least 1, not {cap}.")
    rng = random.Random(f"adapt-sample-{seed}")
    sample: list[StoredChunk] = []
    total, last_id = 0, -1
    for batch in engine.iter_chunks() if manifest is not None else []:
        for c in batch:
            total += 1
            last_id = max(last_id, c.chunk_id)
            if len(sample) < cap:
                sample.append(replace(c, metadata={}))
            else:
                j = rng.randrange(total)
                if j < cap:
                    sample[j] = replace(c, metadata={})
    if manifest is None or not sample:
        raise InputError(f"the index at {engine.folder} holds no chunks; ingest documents first.")
    sample.sort(key=lambda c: c.chunk_id)
    return ChunkSample(manifest, sample, total, last_id)


def train_options(**options: Any) -> TrainOptions:
    """``TrainOptions`` from keyword arguments; an unknown one is a one-sentence error."""
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(
            f"unknown training option {unknown[0]!r}; known: {', '.join(sorted(known))}."
        )
    return TrainOptions(**{k: v for k, v in options.items() if v is not None})


# ----- adapt --layers: a shallower student distilled from the adapted model --------------------
def _layer_list(model: Any) -> tuple[Any, Any]:
    """The transformer's ``nn.ModuleList`` of layers and its config (BERT/RoBERTa/XLM-R:
    ``encoder.layer``; DistilBERT: ``transformer.layer``)."""
    auto = model[0].auto_model
    for owner in ("encoder", "transformer"):
        layers = getattr(getattr(auto, owner, None), "layer", None)
        if layers is not None:
            return layers, auto.config
    raise InputError(
        f"cannot drop layers of a {type(auto).__name__}; --layers needs a BERT-like model."
    )


def check_layers(model: Any, layers: int) -> int:
    """The teacher's layer count, after checking that ``layers`` is a proper subset of it."""
    total = len(_layer_list(model)[0])
    if not 1 <= layers < total:
        raise InputError(
            f"--layers must be between 1 and {total - 1} (the model has {total} layers), "
            f"not {layers}."
        )
    return total


def kept_layers(total: int, layers: int) -> list[int]:
    """Evenly spaced layers from the first (6 -> 3 keeps 0, 2, 4: DistilBERT's every other)."""
    return sorted({(i * total) // layers for i in range(layers)})


def make_student(teacher: Any, layers: int) -> tuple[Any, list[int]]:
    """A copy of ``teacher`` keeping ``layers`` of its transformer layers (embeddings, pooling
    and Normalize unchanged), and the indices kept."""
    import copy

    import torch

    student = copy.deepcopy(teacher)
    mods, config = _layer_list(student)
    keep = kept_layers(len(mods), layers)
    owner = student[0].auto_model
    owner = owner.encoder if hasattr(owner, "encoder") else owner.transformer
    owner.layer = torch.nn.ModuleList([mods[i] for i in keep])
    for new, layer in enumerate(owner.layer):  # attention caches index layers by position
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new
    config.num_hidden_layers = len(keep)
    if hasattr(config, "n_layers"):
        config.n_layers = len(keep)
    return student, keep


def distil(
    teacher: Any,
    student: Any,
    texts: list[str],
    max_length: int,
    opts: TrainOptions,
) -> dict[str, Any]:
    """Train ``student`` to reproduce ``teacher``'s normalised embeddings of ``texts`` (MSE,
    sentence-transformers' ``MSELoss``) for ``opts.distil_minutes`` (or ``distil_steps`` steps, or
    ``epochs`` passes, default 10), in a seeded order; returns steps, seconds and the last loss."""
    import torch
    from sentence_transformers.sentence_transformer import losses

    t0 = time.perf_counter()
    targets = torch.from_numpy(embed(teacher, texts, max_length))
    target_seconds = time.perf_counter() - t0
    torch.manual_seed(opts.seed)
    loss = losses.MSELoss(student)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01)
    order: list[int] = []
    for epoch in range(opts.epochs or 10):
        part = list(range(len(texts)))
        random.Random(f"{opts.seed}-distil-{epoch}").shuffle(part)
        order += part
    batches = [order[i : i + opts.batch_size] for i in range(0, len(order), opts.batch_size)]
    if opts.distil_steps:
        batches = batches[: opts.distil_steps]
    budget = opts.distil_minutes * 60
    started = time.perf_counter()
    steps, last = 0, math.nan
    student.train()
    for idx in batches:
        if time.perf_counter() - started >= budget:
            break
        feats = features(student, [texts[i] for i in idx], max_length)
        optimizer.zero_grad(set_to_none=True)
        value = loss([feats], targets[idx].to(student.device))
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        steps += 1
        last = float(value.detach())
    student.eval()
    return {
        "steps": steps,
        "planned_steps": len(batches),
        "seconds": round(time.perf_counter() - started, 1),
        "teacher_embedding_seconds": round(target_seconds, 1),
        "texts": len(texts),
        "last_loss": last,
    }


def distillation_card(d: dict[str, Any]) -> str:
    """The model card's paragraph on the student (layers, distillation, both self-checks)."""

    def f(scores: dict[str, float]) -> str:
        return f"{scores['ndcg@10']:.4f}" if "ndcg@10" in scores else "-"

    return (
        f"Student distilled by `--layers {d['student_layers']}`: {d['student_layers']} of the "
        f"adapted teacher's {d['teacher_layers']} transformer layers (kept: "
        f"{', '.join(map(str, d['kept']))}), trained for {d['steps']} steps "
        f"({d['seconds'] / 60:.1f} minutes) to reproduce the teacher's embeddings of "
        f"{d['texts']} texts of the index (its training chunks and their sentences), MSE loss. "
        f"Self-check nDCG@10: base {f(d['base'])}, teacher {f(d['teacher'])}, "
        f"student {f(d['student'])} (the table above is base -> student: the student is what "
        "this folder holds).\n"
    )


# ----- adapt -----------------------------------------------------------------------------------
def _examples(method: str, train_chunks: list[Any], seed: int) -> tuple[list[Any], list[str]]:
    """Training examples and their document ids for the method."""
    if method in ("ict", "ict-hard", "tsdae"):
        pairs = make_pseudo_queries(train_chunks, 0, seed)
        return pairs, [p.doc_id for p in pairs]
    usable = [c for c in train_chunks if len(c.text.split()) >= 8]
    items = [(c, k) for c in usable for k in range(CROPS_PER_CHUNK)]
    return items, [c.doc_id for c, _ in items]


def _tsdae_noise(text: str, rng: random.Random, ratio: float = 0.6) -> str:
    """TSDAE's deletion noise: keep each word with probability 1 - ratio (at least one)."""
    words = text.split()
    kept = [w for w in words if rng.random() > ratio]
    return " ".join(kept or [rng.choice(words)])


def adapt(engine: SearchEngine, out: str | os.PathLike[str], **options: Any) -> TrainReport:
    """Adapt the index's model to its chunks (no labels) and write it to ``out``.

    ``options``: the fields of ``TrainOptions`` (method, max_minutes, epochs, max_steps,
    batch_size, seed, device, lr, max_length, query_length, warmup, checkpoint_minutes, force,
    progress, layers, distil_minutes, distil_steps, max_chunks); None keeps a default. At most
    ``max_chunks`` chunks are read (a uniform sample of a larger index: ``sample_index_chunks``);
    a slice of them (a sixth, at most 300) is held out. With ``layers``, a student keeping that many of the
    trained model's transformer layers is distilled from it (``distil``) and written instead.
    """
    opts = train_options(**options)
    if opts.method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not '{opts.method}'.")
    if opts.batch_size < 2:
        raise InputError(
            "the batch size must be at least 2 (the other examples are the negatives)."
        )
    if opts.layers is not None and opts.layers < 1:
        raise InputError(f"--layers must be at least 1, not {opts.layers}.")
    sampled = sample_index_chunks(engine, opts.max_chunks, opts.seed)
    manifest, chunks = sampled.manifest, sampled.chunks
    out = Path(out)
    check_out(out, opts.force)

    # held-out chunks: never trained on, their pseudo-queries check the model
    rng = random.Random(opts.seed)
    with_pairs = [c for c in chunks if next(iter(make_pseudo_queries([c], 1)), None) is not None]
    n_hold = min(300, max(1, len(with_pairs) // 6)) if len(with_pairs) >= 2 else 0
    held_chunks = {c.chunk_id for c in rng.sample(with_pairs, n_hold)}
    held = make_pseudo_queries([c for c in chunks if c.chunk_id in held_chunks], n_hold, opts.seed)
    train_chunks = [c for c in chunks if c.chunk_id not in held_chunks]
    check = cloze_check(held, chunks, opts.seed)
    examples, docs = _examples(opts.method, train_chunks, opts.seed)
    if len(set(docs)) < 2:
        raise InputError(
            "the index has too little text to adapt on (fewer than two documents "
            "with usable sentences); ingest more documents first."
        )

    import torch

    torch.manual_seed(opts.seed)  # TSDAE's decoder is initialised with random weights
    model = load_start_model(manifest, opts.device)
    teacher_layers = check_layers(model, opts.layers) if opts.layers is not None else 0
    base_len = int(manifest.max_length or model.max_seq_length)
    max_len = min(opts.max_length, base_len)
    per_epoch = max(1, len(examples) // opts.batch_size)
    # with a budget, as many epochs as fit (the schedule is precomputed: keep it bounded)
    epochs = opts.epochs or (1 if not opts.max_minutes else max(1, min(100, 20000 // per_epoch)))
    order: list[int] = []
    for epoch in range(epochs):
        part = list(range(len(examples)))
        random.Random(f"{opts.seed}-{epoch}").shuffle(part)
        order += part
    batches = doc_distinct_batches(docs, order, opts.batch_size)
    steps_per_epoch = max(1, len(batches) // epochs)

    from sentence_transformers.sentence_transformer import losses

    negatives: dict[int, str] = {}

    def hard_negative(i: int) -> str:
        if i not in negatives:
            pq = examples[i]
            hits = engine.search(pq.query, k=5, mode="lexical", snippets=False)
            other = [h for h in hits if h.doc_id != pq.doc_id]
            negatives[i] = (
                other[0].text if other else examples[(i * 7919 + 1) % len(examples)].positive
            )
        return negatives[i]

    loss: Any
    if opts.method == "tsdae":
        from .backends.torch import quiet_loading

        with quiet_loading():  # the decoder's load report lists its new cross-attention weights
            loss = losses.DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
        lengths = [opts.query_length]
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
        lengths = [opts.query_length, max_len]

    def make_batch(step: int, idx: list[int]) -> list[list[str]]:
        if opts.method == "crop":
            cols: list[list[str]] = [[], []]
            for i in idx:
                chunk, k = examples[i]
                r = random.Random(f"{opts.seed}-{step}-{chunk.chunk_id}-{k}")
                pair = crop_pair(chunk.text, r) or (chunk.text, chunk.text)
                cols[0].append(pair[0])
                cols[1].append(pair[1])
            return cols
        if opts.method == "tsdae":
            noisy = [
                _tsdae_noise(examples[i].query, random.Random(f"{opts.seed}-{step}-{i}"))
                for i in idx
            ]
            return [noisy, [examples[i].query for i in idx]]
        cols = [[examples[i].query for i in idx], [examples[i].positive for i in idx]]
        if opts.method == "ict-hard":
            cols.append([hard_negative(i) for i in idx])
        return cols

    fingerprint = opts.fingerprint(
        {
            "command": "adapt",
            "encoder": manifest.encoder,
            "chunks": sampled.total,
            "last_chunk": sampled.last_id,
            "generation": manifest.generation,
            **({"sample": len(chunks)} if len(chunks) < sampled.total else {}),
        }
    )
    started = time.perf_counter()
    model.max_seq_length = base_len
    resumable = load_checkpoint(out, fingerprint) is not None
    before = check.score(model, base_len)
    if opts.progress:
        log.info("before: %s", before)
    result = run_training(out, model, loss, batches, make_batch, opts, fingerprint, lengths)
    after = check.score(model, base_len)
    report = TrainReport(
        out=str(out),
        command="adapt",
        method=opts.method,
        base_model=manifest.encoder,
        examples=len(examples),
        steps=result.steps,
        planned_steps=result.planned,
        epochs_done=result.steps / steps_per_epoch,
        seconds=result.seconds,
        stopped=result.stopped,
        before=before,
        after=after,
        check=f"held-out inverse-cloze pseudo-queries from {len(held_chunks)} chunks never "
        f"trained on",
        check_queries=len(held),
        written=False,
        resumed_from=result.resumed_from if resumable else 0,
        options={**asdict(opts), "wall_seconds": round(time.perf_counter() - started, 1)},
        index_chunks=sampled.total,
        chunks_sampled=len(chunks),
    )
    if opts.layers is None:
        return finish(report, model, out, manifest, sampled.total)
    # the student learns the adapted teacher's embeddings of the training chunks and of their
    # sentences (short, query-like texts); held-out chunks stay out, so the self-check is fair
    texts = list(
        dict.fromkeys(
            [c.text for c in train_chunks]
            + [pq.query for pq in make_pseudo_queries(train_chunks, 0, opts.seed)]
        )
    )
    student, keep = make_student(model, opts.layers)
    done = distil(model, student, texts, max_len, opts)
    student.max_seq_length = base_len
    report.distillation = {
        "teacher_layers": teacher_layers,
        "student_layers": len(keep),
        "kept": keep,
        **done,
        "base": before,
        "teacher": after,
        "student": check.score(student, base_len),
    }
    report.after = report.distillation["student"]
    report.options["wall_seconds"] = round(time.perf_counter() - started, 1)
    return finish(
        report, student, out, manifest, sampled.total, distillation_card(report.distillation)
    )
