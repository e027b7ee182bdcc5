"""Bad inputs through the library's ``SearchEngine``: huge files and fields, Unicode
normalisation, duplicate ids, queries of any characters and any Unicode text round-tripping.
No input may crash an ingest or a query. What a reader does with a file is in
tests/test_readers.py; what the command line prints, in tests/cli/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beto_search import SearchEngine
from beto_search.readers import clean_text
from tests.encoders import SmallHashEncoder as HashEncoder
from tests.paths import ROOT, TESTS


def _doc(engine: SearchEngine, doc_id: str) -> dict | None:
    """A stored document without its chunk list (id, source, title, text, metadata)."""
    doc = engine.get_document(doc_id)
    if doc is not None:
        del doc["chunks"]
    return doc


# huge files and fields -----------------------------------------------------------------------
def test_very_large_csv_field(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    big = " ".join(f"palabra{i % 997} río" for i in range(150_000))  # ~2 MB, far above 128 KiB
    (docs / "big.csv").write_text(f'id,text\nbig,"{big}"\nsmall,pequeño\n', encoding="utf-8")
    with SearchEngine.open(tmp_path / "idx", HashEncoder()) as engine:
        summary = engine.ingest([docs])
        assert summary.added == 2 and summary.skipped == []
        assert engine.get_document("big")["text"] == big
        assert engine.verify() == []
        assert engine.search("palabra5", k=2, mode="lexical")[0].doc_id == "big"


LARGE_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    import psutil
    sys.path.insert(0, sys.argv[3])
    from encoders import SmallHashEncoder as HashEncoder
    from beto_search import SearchEngine

    src, index = Path(sys.argv[1]), Path(sys.argv[2])
    engine = SearchEngine.open(index, HashEncoder())
    engine.add([{"id": "warm", "text": "calentar todo antes de medir"}])
    engine.search("calentar", mode="hybrid")
    import threading
    proc, peak, running = psutil.Process(), [0], [True]

    def sample():  # ru_maxrss would include whatever start-up did: sample during the ingest
        while running[0]:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    before = proc.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    summary = engine.ingest([src])
    running[0] = False
    sampler.join()
    peak = max(peak[0], proc.memory_info().rss)
    print(json.dumps({"added": summary.added, "skipped": len(summary.skipped),
                      "growth": peak - before, "seconds": time.perf_counter() - t,
                      "docs": engine.counts()["documents"]}))
""")


@pytest.mark.slow
def test_large_jsonl_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    words = [
        "el",
        "río",
        "la",
        "montaña",
        "ciudad",
        "historia",
        "ciencia",
        "cocina",
        "fútbol",
        "ley",
        "música",
        "salud",
        "año",
    ]
    rng = np.random.default_rng(0)
    vocab = [f"{w}{i}" for i in range(200) for w in words]
    n, size = 0, 0
    with src.open("w", encoding="utf-8") as fh:
        while size < 24 * 2**20:
            text = " ".join(rng.choice(vocab, 40))
            line = (
                json.dumps({"id": f"r{n}", "text": text, "pad": "x" * 1700}, ensure_ascii=False)
                + "\n"
            )
            fh.write(line)
            size += len(line.encode())
            n += 1
    script = tmp_path / "large.py"
    script.write_text(LARGE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(src), str(tmp_path / "idx"), str(TESTS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        # the measure is the read-chunk-write path: the after-write fusion tune (untitled
        # one-sentence records now get crop pseudo-queries) reads a bounded sample of the index,
        # not the file (with it on, the growth here was 49 MB for this 25 MB file)
        env=dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", BETO_SEARCH_AUTOTUNE="0"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["added"] == n and out["docs"] == n + 1 and out["skipped"] == 0
    # streamed: peak memory grows less than the file's size (measured ~0.5x: SQLite and FAISS
    # caches, the ids seen); reading it whole would cost ~3x (bytes, str, lines, Documents)
    assert out["growth"] < size, (out, size)


# Unicode and ids -----------------------------------------------------------------------------
def test_nfd_accents_normalised_to_nfc(tiny_encoder, tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "La canción del niño pingüino en Cádiz, año de piñas.")
    assert nfd != unicodedata.normalize("NFC", nfd)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "nfd.txt").write_text(nfd + "\n", encoding="utf-8")
    (docs / "otro.txt").write_text("Un texto sin relación sobre trenes y estaciones.\n")
    with SearchEngine.open(tmp_path / "idx", tiny_encoder) as engine:
        engine.ingest([docs])
        engine.add(
            [
                {
                    "id": unicodedata.normalize("NFD", "canción-nfd"),
                    "text": nfd,
                    "title": unicodedata.normalize("NFD", "Canción"),
                }
            ]
        )
        doc = _doc(engine, "nfd.txt")
        assert doc["text"] == unicodedata.normalize("NFC", nfd) + "\n"
        rec = _doc(engine, "canción-nfd")  # the id was normalised too
        assert rec is not None and rec["title"] == "Canción"
        for mode in ("lexical", "semantic", "hybrid"):
            by_nfc = engine.search("canción niño", k=3, mode=mode)
            by_nfd = engine.search(unicodedata.normalize("NFD", "canción niño"), k=3, mode=mode)
            assert [(h.doc_id, round(h.score, 5)) for h in by_nfc] == [
                (h.doc_id, round(h.score, 5)) for h in by_nfd
            ]
            if mode == "lexical":
                assert {h.doc_id for h in by_nfc} == {"nfd.txt", "canción-nfd"}


def test_duplicate_ids_through_add(tiny_encoder, tmp_path: Path) -> None:
    with SearchEngine.open(tmp_path / "idx", tiny_encoder) as engine:
        s = engine.add(
            [{"id": "a", "text": "uno"}, {"id": "a", "text": "dos"}, {"id": "b", "text": "tres"}]
        )
        assert (s.added, s.duplicates) == (2, 1)
        assert engine.get_document("a")["text"] == "dos"


# queries -----------------------------------------------------------------------------------
NASTY_QUERIES = [
    '"',
    '""',
    "'",
    "(",
    ")",
    "((río)",
    "(a OR b)",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "a AND NOT b",
    "río OR",
    "NOT río",
    "-",
    "--",
    "-río",
    ":",
    "title:río",
    "terms:agua",
    "*",
    "río*",
    "^río",
    '"sin cerrar',
    "río NEAR/3 mar",
    "NEAR(río mar)",
    "{col}: x",
    "[",
    "]",
    "\\",
    "%",
    "_",
    "'; DROP TABLE documents; --",
    "😀",
    "emoji 😀🇪🇸 y río",
    "\x00río\x00",
    "\u200b",
    "\u0301",
    " ¿¡?! ",
    "\v\x1f\x7f",
    "ñ",
    "Ñandú",
    "مرحبا",
    "水の流れ",
    "\ud800",
    "río\udcff",
    "x" * 10_000,
    ("río " * 2500),
    "".join(chr(c) for c in range(33, 10_033)),
    "\ufeffrío",
    "a" + "\u0301" * 500,
    "+",
    "+río",
    "~",
    "&&",
    "||",
    "!",
    "?",
    "@",
    "#",
    "$",
]


@pytest.fixture(scope="module")
def query_engine(corpus_index: Path, tiny_encoder, tmp_path_factory: pytest.TempPathFactory):
    import shutil

    dest = tmp_path_factory.mktemp("q") / "idx"
    shutil.copytree(corpus_index, dest)
    engine = SearchEngine.open(dest, tiny_encoder, create=False)
    yield engine
    engine.close()


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
def test_queries_with_any_characters_never_fail(query_engine, mode: str) -> None:
    for q in NASTY_QUERIES:
        for fusion in ("rrf", "convex") if mode == "hybrid" else ("rrf",):
            hits = query_engine.search(q, k=5, mode=mode, fusion=fusion)
            assert len(hits) <= 5
            assert all(h.rank == i for i, h in enumerate(hits, 1))
    assert query_engine.search("río", k=5, mode=mode)  # still a working index


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    q=st.text(st.characters(exclude_categories=()), min_size=1, max_size=300).filter(
        lambda s: clean_text(s).strip()
    )
)
def test_property_any_query_in_every_mode(query_engine, q: str) -> None:
    for mode in ("semantic", "lexical", "hybrid"):
        assert len(query_engine.search(q, k=3, mode=mode)) <= 3


# round trip ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roundtrip_engine(tiny_encoder, tmp_path_factory: pytest.TempPathFactory):
    engine = SearchEngine.open(tmp_path_factory.mktemp("rt") / "idx", tiny_encoder)
    yield engine
    engine.close()


def _expected(text: str) -> str:
    return unicodedata.normalize("NFC", text.lstrip("\ufeff").replace("\x00", ""))


_counter = iter(range(10**9))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=400), title=st.text(max_size=40))
def test_property_any_unicode_round_trips(roundtrip_engine, text: str, title: str) -> None:
    engine = roundtrip_engine
    doc_id = f"doc-{next(_counter)}"
    summary = engine.add([{"id": doc_id, "text": text, "title": title, "metadata": {"t": text}}])
    assert summary.added == 1
    back = engine.get_document(doc_id)
    assert back is not None
    assert back["text"] == _expected(text)
    assert back["title"] == _expected(title)
    assert back["metadata"] == {"t": text}
    if back["text"]:
        # the document comes back by id through a query, in every mode that can find it
        query = text if text.strip("\x00\ufeff").strip() else "consulta"
        for mode in ("semantic", "hybrid"):
            hits = engine.search(query, k=1, mode=mode, where={"id": doc_id})
            assert [h.doc_id for h in hits] == [doc_id]
            assert back["text"][hits[0].start : hits[0].end] == hits[0].text
    assert engine.verify() == []
