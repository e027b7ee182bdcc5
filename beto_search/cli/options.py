"""What the command modules share: the one-line error wrapper, the option groups several commands
take (index, encoder, rerank, Ray, ``--queries/--qrels``, ``--wait``, ``--json``), opening an
index, and small formatting helpers. Imports no other module of ``beto_search.cli``."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from ..encoder import DEFAULT_MODEL, DEVICES, POOLINGS, PRECISIONS
from ..errors import BetoSearchError
from ..rerank import DEFAULT_DEPTH
from ..rerank import PRECISIONS as RERANK_PRECISIONS

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def one_line_errors(func: F) -> F:
    """Turn library errors into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BetoSearchError as exc:
            msg = str(exc)
            raise click.ClickException(msg[:1].upper() + msg[1:]) from None

    return wrapper  # type: ignore[return-value]


def stack(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` as if written one above the other, in this order."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


class LazyChoice(click.Choice):
    """A Choice whose values ``load()`` gives when click first needs them (help, parsing), so
    that importing the CLI does not import the module that defines them."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        super().__init__(())
        del self.__dict__["choices"]  # so that the property below answers
        self._load = load

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._load())


class LazyDefault(click.Option):
    """An option whose default (a function) is called when first needed, and shown in --help as
    the value it gives, not as "(dynamic)"."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        return super().get_default(ctx, call=True)


def index_option(func: F) -> F:
    return click.option(
        "--index",
        "index",
        type=click.Path(path_type=Path),
        envvar="BETO_SEARCH_INDEX",
        default="indexes/default",
        show_default=True,
        help="Index folder (env BETO_SEARCH_INDEX).",
    )(func)


encoder_options: Decorator[Any] = stack(
    click.option(
        "--model",
        default=None,
        help="Hub id or local folder of the encoder (env BETO_SEARCH_MODEL; default "
        f"{DEFAULT_MODEL}).",
    ),
    click.option(
        "--pooling",
        type=click.Choice(POOLINGS),
        default=None,
        help="Pooling of token vectors (new indexes; default: the one a saved "
        "sentence-transformers folder declares, else mean).",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=None,
        help="Encoder arithmetic (default: the index's; a new index: auto, the fastest "
        "that keeps quality on this CPU, or env BETO_SEARCH_PRECISION).",
    ),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
)

# --rerank [MODEL], --rerank-depth, --rerank-precision: shared by query, eval and serve
rerank_options: Decorator[Any] = stack(
    click.option(
        "--rerank",
        "rerank",
        default=None,
        is_flag=False,
        flag_value="",
        metavar="[MODEL]",
        help="Rescore the top documents with a cross-encoder (hub id or folder; alone: env "
        "BETO_SEARCH_RERANKER).",
    ),
    click.option(
        "--rerank-depth",
        type=click.IntRange(min=1),
        default=DEFAULT_DEPTH,
        show_default=True,
        help="How many of the top documents the cross-encoder rescores.",
    ),
    click.option(
        "--rerank-precision",
        type=click.Choice(RERANK_PRECISIONS),
        default="auto",
        show_default=True,
        help="Cross-encoder arithmetic (auto: chosen for this machine, as for the encoder).",
    ),
)


def rerank_model(rerank: str | None) -> str | None:
    """None (no rerank), or the model a given --rerank names (a bare one: the env's)."""
    if rerank is None:
        return None
    from ..rerank import rerank_model as model_named

    return model_named(rerank or None)


def wait_option(help: str = "Seconds to wait for another writer to finish.") -> Decorator[Any]:
    """--wait SECONDS: how long a write waits for the index's lock."""
    return click.option("--wait", type=click.FloatRange(min=0), default=0.0, help=help)


def json_option(help: str = "Print one JSON object.") -> Decorator[Any]:
    """--json: print the command's result as JSON instead of lines of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def eval_inputs(queries_help: str, qrels_help: str, required: bool = False) -> Decorator[Any]:
    """--queries FILE and --qrels FILE, a judged query set as 'eval' reads it."""
    default: dict[str, Any] = {} if required else {"default": None}
    return stack(
        click.option(
            "--queries",
            required=required,
            type=click.Path(path_type=Path),
            **default,
            metavar="FILE",
            help=queries_help,
        ),
        click.option(
            "--qrels",
            required=required,
            type=click.Path(path_type=Path),
            **default,
            metavar="FILE",
            help=qrels_help,
        ),
    )


def open_index(index: Path, create: bool = False, wait: float = 0.0, **enc: Any) -> Any:
    """THE place commands open an index: a ``SearchEngine``, or a ``ShardedEngine`` (the same
    methods) for a sharded folder."""
    from ..engine import SearchEngine

    return SearchEngine.open(index, create=create, wait=wait, **enc)


# ----- Ray: --ray [ADDRESS] and its options (ingest and reembed) -----------------------------
@dataclass(frozen=True)
class RayRequest:
    """What --ray and its options asked for; a command gets None without --ray."""

    address: str
    workers: int | None
    gpus: float | None
    window: int | None


_RAY_OPTIONS = stack(
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Encode on Ray: alone a local Ray instance, 'auto' the cluster this machine is "
        "part of, or a cluster address (needs beto-search[ray]).",
    ),
    click.option(
        "--ray-workers",
        type=click.IntRange(min=1),
        default=None,
        help="Encoding actors on Ray (default: one per GPU, else one per 4 CPUs of each node).",
    ),
    click.option(
        "--ray-gpus",
        type=click.FloatRange(min=0),
        default=None,
        help="GPUs per encoding actor (default: 1 when the cluster has GPUs; 0: CPUs only).",
    ),
    click.option(
        "--ray-window",
        type=click.IntRange(min=1),
        default=None,
        help="Chunks per Ray Data run; the actors load the model once per run (default 32768).",
    ),
)


def ray_options(func: F) -> F:
    """--ray [ADDRESS], --ray-workers, --ray-gpus, --ray-window, given to the command as one
    ``ray: RayRequest | None``; with --ray, Ray must import before anything else happens."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        ray_address: str | None,
        ray_workers: int | None,
        ray_gpus: float | None,
        ray_window: int | None,
        **kwargs: Any,
    ) -> Any:
        ray = None
        if ray_address is not None:
            from ..distributed import require_ray

            require_ray()  # before the index is opened or the model loaded
            ray = RayRequest(ray_address, ray_workers, ray_gpus, ray_window)
        return func(*args, ray=ray, **kwargs)

    return cast(F, _RAY_OPTIONS(one_line_errors(wrapper)))


def ray_embedder_for(exits: contextlib.ExitStack, ray: RayRequest | None, **source: Any) -> Any:
    """None without --ray; else a RayEmbedder entered on ``exits``, for ``engine=`` (ingest) or
    ``encoder=`` (a re-embedding's target)."""
    if ray is None:
        return None
    from ..distributed import RayEmbedder

    options: dict[str, Any] = {
        "address": None if ray.address == "local" else ray.address,
        "workers": ray.workers,
        "gpus_per_worker": ray.gpus,
        **({"window_chunks": ray.window} if ray.window else {}),
    }
    if "engine" in source:
        return exits.enter_context(RayEmbedder.for_engine(source["engine"], **options))
    return exits.enter_context(RayEmbedder.for_encoder(source["encoder"], **options))


# ----- formatting -----------------------------------------------------------------------------
def count(n: int, word: str) -> str:
    """ "1 document", "2 documents" (the nouns this CLI counts take an s)."""
    return f"{n} {word}{'' if n == 1 else 's'}"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)\s*", re.IGNORECASE)


def size_option_value(text: str, option: str) -> int:
    """Bytes from '4MB', '500k', '1.5GiB' or a plain number (powers of 1024)."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise click.BadParameter(f"'{text}' is not a size like 4MB or 500KB.", param_hint=option)
    unit = m.group(2)[:1].lower()
    return int(float(m.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit])
