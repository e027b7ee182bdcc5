"""The ``beto-search`` command line: thin click commands over ``SearchEngine``.

The group lives here; the commands live in ``index_cmds``, ``search_cmds``, ``quality_cmds`` and
``serve_cmd`` (they share ``options``), and are registered below. No command module imports this
one.
"""

from __future__ import annotations

import logging
import sys

import click

from .index_cmds import COMMANDS as INDEX_COMMANDS
from .index_cmds import compact, delete, info, ingest, reembed, repair, verify
from .quality_cmds import COMMANDS as QUALITY_COMMANDS
from .quality_cmds import adapt, eval_, train, tune
from .search_cmds import COMMANDS as SEARCH_COMMANDS
from .search_cmds import query, similar
from .serve_cmd import COMMANDS as SERVE_COMMANDS
from .serve_cmd import serve

__all__ = [
    "adapt",
    "cli",
    "compact",
    "delete",
    "eval_",
    "info",
    "ingest",
    "main",
    "query",
    "reembed",
    "repair",
    "serve",
    "similar",
    "train",
    "tune",
    "verify",
]


@click.group()
@click.version_option(package_name="beto-search")
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (skips, heals).")
def cli(verbose: bool) -> None:
    """Spanish semantic search with BETO: ingest documents, then query them by meaning."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


for _command in (*INDEX_COMMANDS, *SEARCH_COMMANDS, *QUALITY_COMMANDS, *SERVE_COMMANDS):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="beto-search")
