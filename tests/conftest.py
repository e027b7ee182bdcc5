"""Shared fixtures: a small BETO-shaped model built at test time, loaded like the real one."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.encoders import HashEncoder
from tests.paths import CORPUS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network in tests
os.environ.pop("BETO_SEARCH_MODEL", None)
os.environ.pop("BETO_SEARCH_INDEX", None)
# compiled graphs of test models go to a private cache (subprocesses inherit it), and new test
# indexes keep fp32 unless a test asks for another precision (auto is tested on its own)
os.environ["BETO_SEARCH_CACHE"] = tempfile.mkdtemp(prefix="beto-search-test-cache-")
atexit.register(shutil.rmtree, os.environ["BETO_SEARCH_CACHE"], ignore_errors=True)
os.environ["BETO_SEARCH_PRECISION"] = "fp32"


def corpus_texts() -> list[str]:
    texts = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file():
            texts.append(p.read_text(encoding="utf-8"))
    return texts


@pytest.fixture(scope="session")
def beto_vocab_dir() -> Path:
    """BETO's real uncased vocabulary folder, shipped in the package (beto_search/data/beto)."""
    from beto_search.testing import BETO_UNCASED

    return BETO_UNCASED


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BETO-shaped BertModel folder with BETO's real (shipped) vocabulary."""
    from beto_search.testing import build_bert_folder

    return build_bert_folder(tmp_path_factory.mktemp("tiny-beto"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model: Path):
    from beto_search import BetoEncoder

    return BetoEncoder(str(tiny_model))


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    """corpora/es ingested once with the tiny model (tests copy it before changing it)."""
    from beto_search import SearchEngine

    folder = tmp_path_factory.mktemp("corpus-index") / "idx"
    with SearchEngine.open(folder, encoder=tiny_encoder) as engine:
        engine.ingest([CORPUS])
    return folder


SPANISH_TEXTS = [
    "¿Quién escribió Cien años de soledad?",
    "Gabriel García Márquez nació en Aracataca, Colombia, en 1927, y fue periodista antes que novelista.",
    "El gato duerme.",
    (
        "La economía española creció un dos por ciento el año pasado, según el Instituto Nacional de "
        "Estadística, impulsada por el turismo y las exportaciones de bienes de equipo."
    ),
    "Madrid es la capital de España.",
]


def encoder_pairs(model: Path, cache: Path, precision: str, poolings: tuple[str, ...]):
    """Yield {pooling: (torch fp32 encoder, ``precision`` encoder)}, compiled into ``cache``."""
    from beto_search import BetoEncoder

    mp = pytest.MonkeyPatch()
    mp.setenv("BETO_SEARCH_CACHE", str(cache))
    try:
        yield {
            pooling: (
                BetoEncoder(str(model), pooling=pooling, device="cpu"),
                BetoEncoder(str(model), pooling=pooling, precision=precision),
            )
            for pooling in poolings
        }
    finally:
        mp.undo()


@pytest.fixture
def use_encoder():
    """``use_encoder(enc)``: every encoder an index builds during the test is ``enc``
    (``beto_search.testing.encoder_factory``), not a model loaded from its name."""
    from beto_search.testing import encoder_factory

    with ExitStack() as stack:
        yield lambda encoder: stack.enter_context(encoder_factory(encoder))


@pytest.fixture
def cli_run(use_encoder, tiny_model: Path, tiny_encoder):
    """Invoke the CLI in-process with the session's tiny encoder (no model reload per call)."""
    from click.testing import CliRunner

    from beto_search.cli import cli

    use_encoder(tiny_encoder)

    def run(*args: object):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    run.model = str(tiny_model)
    return run


@pytest.fixture
def index_copy(corpus_index: Path, tmp_path: Path) -> Path:
    """A private copy of the corpus index."""
    import shutil

    dest = tmp_path / "idx"
    shutil.copytree(corpus_index, dest)
    return dest


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()
