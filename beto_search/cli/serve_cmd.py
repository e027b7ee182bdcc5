"""The serve command: the HTTP server (a JSON API and a search page) over one index."""

from __future__ import annotations

from pathlib import Path

import click

from ..encoder import DEVICES, PRECISIONS
from .options import index_option, one_line_errors, rerank_model, rerank_options


@click.command()
@index_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; a non-loopback one needs --api-key or --read-only.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="BETO_SEARCH_API_KEY",
    default=None,
    help="Key for 'Authorization: Bearer KEY' (env BETO_SEARCH_API_KEY); writes need it.",
)
@click.option("--public-read", is_flag=True, help="With a key set, let searches go without it.")
@click.option("--read-only", is_flag=True, help="Refuse every write.")
@click.option(
    "--cors", multiple=True, metavar="ORIGIN", help="Allow this browser origin (repeatable)."
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host is NAME ('*.example.org' for subdomains; repeatable). "
    "Loopback names and the bound host are always allowed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes (each loads the model).",
)
@click.option("--model", default=None, help="Encoder folder or hub id (default: the index's).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Query encoder arithmetic (default: the index's).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@rerank_options
@one_line_errors
def serve(
    index: Path,
    host: str,
    port: int,
    api_key: str | None,
    public_read: bool,
    read_only: bool,
    cors: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    workers: int,
    model: str | None,
    precision: str | None,
    device: str,
    rerank: str | None,
    rerank_depth: int,
    rerank_precision: str,
) -> None:
    """Serve the index over HTTP: a JSON API and a search page at http://HOST:PORT/."""
    try:
        from ..server import ServerSettings
        from ..server import serve as run_server
    except ImportError:
        raise click.ClickException(
            "the server needs its extra: pip install 'beto-search[server]'."
        ) from None
    settings = ServerSettings(
        index=str(index),
        api_key=api_key or None,
        read_only=read_only,
        public_read=public_read,
        cors=list(cors),
        allowed_hosts=list(allowed_hosts),
        model=model,
        precision=precision,
        device=device,
        # the server's reranker (a client may switch it off, never name another model)
        rerank=rerank_model(rerank),
        rerank_depth=rerank_depth,
        rerank_precision=rerank_precision,
    )
    run_server(settings, host=host, port=port, workers=workers)


COMMANDS = (serve,)
