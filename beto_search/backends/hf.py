"""Loading from Hugging Face: the hub checks, the one-sentence load error, quiet loading, and
the fp32 torch model a compiled backend exports from.

Shared by every backend and the reranker. Importing this module imports no model library:
transformers and the hub client are imported inside the functions that use them, and the torch
encoder of ``load_for_export`` is built through ``factory`` (which names the backends by string),
so base, onnx and openvino import this module and not the torch backend.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

from ..encoder import DEFAULT_MODEL
from ..errors import InputError, ModelLoadError


def load_failure(
    name: str, exc: Exception, why: str | None = None, how: str | None = None
) -> ModelLoadError:
    """The one-sentence error for a model that could not be loaded (``why``: said instead of
    ``exc``; ``how``: what to do instead, for callers other than the encoder, e.g. the reranker)."""
    offline = hub_offline()
    how = how or (
        "pass --model PATH (or BETO_SEARCH_MODEL) with a local folder, or save a copy on a connected "
        "machine with SentenceTransformer('"
        + DEFAULT_MODEL
        + "').save('beto') and copy that folder "
        "here"
    )
    why = why or (
        "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
        if offline
        else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            if str(exc)
            else type(exc).__name__
        )
    )
    return ModelLoadError(
        f"Could not load the model '{name}' as a local folder or from the Hugging "
        f"Face hub ({why}); {how}."
    )


HUB_PROBE_TIMEOUT = 5.0  # seconds for the one request that tells whether the hub answers


@functools.lru_cache(maxsize=4)
def hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hugging Face hub at ``endpoint`` cannot be reached (None when it answers).

    One request, no retries: without a network the hub client would otherwise retry every file
    for about a minute, printing a warning per attempt, before failing anyway. Any HTTP answer
    counts as reachable. The hub client's own session is used, so proxies apply as they would.
    """
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as exc:  # requests' or httpx's errors, whichever the hub client uses
        return (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            if str(exc)
            else type(exc).__name__
        )
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set (the hub is never asked)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_hub_id(name: str, revision: str | None) -> str:
    """``name`` itself, or the cached snapshot folder of ``name`` when the hub cannot be reached.

    Raises the one-sentence ModelLoadError when the hub cannot be reached and ``name`` is not in
    the Hugging Face cache, after a single short request instead of a minute of retries.
    """
    if hub_offline():
        return name  # transformers then reads the cache only, at once
    from huggingface_hub import constants, snapshot_download

    why = hub_unreachable(constants.ENDPOINT)
    if why is None:
        return name
    try:
        return str(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and kin)
        raise load_failure(
            name,
            OSError(why),
            f"{constants.ENDPOINT} cannot be reached ({why}) and it is not in the Hugging Face "
            "cache",
        ) from None


class _DropBelow(logging.Filter):
    """Drops records under ``level`` (a scoped stand-in for changing a library's log level)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers / hub warnings and progress bars while loading, then restore them.

    Filters on the libraries' handlers-side loggers are removed afterwards, and transformers'
    progress-bar switch is put back as it was, so the caller's logging setup is left untouched.
    """
    import transformers

    tlog = transformers.utils.logging
    loggers = [
        logging.getLogger("transformers"),
        logging.getLogger("huggingface_hub"),
        logging.getLogger("sentence_transformers"),
    ]
    drop = _DropBelow(logging.ERROR)
    bars = tlog.is_progress_bar_enabled()
    for lg in loggers:
        lg.addFilter(drop)
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # transformers 4.45 announces, at every tokenizer load, a default it will change
            warnings.filterwarnings(
                "ignore",
                message="`clean_up_tokenization_spaces` was not set",
                category=FutureWarning,
            )
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)
        if bars:
            tlog.enable_progress_bar()


def load_for_export(model: str, revision: str | None, precision: str) -> Any:
    """The fp32 CPU torch encoder (``backends.torch.BetoEncoder``) a compiled backend exports
    from, checked to be exportable."""
    from .factory import open_encoder

    source = open_encoder(model, precision="fp32", device="cpu", revision=revision)
    extra = source.extra_modules()
    if extra:
        raise InputError(
            f"precision {precision} supports Transformer -> Pooling -> Normalize "
            f"models; '{model}' also has {', '.join(extra)}."
        )
    bert = source.transformer.model
    if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder")):
        raise InputError(
            f"precision {precision} needs a BERT-like model; '{model}' is a {type(bert).__name__}."
        )
    return source
