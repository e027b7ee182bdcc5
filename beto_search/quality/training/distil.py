"""``adapt --layers``: a shallower student distilled from the adapted model (evenly spaced
layers kept, trained to reproduce the teacher's embeddings)."""

from __future__ import annotations

import math
import random
import time
from typing import Any

from ...errors import InputError
from .model_io import embed, features
from .options import TrainOptions


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
