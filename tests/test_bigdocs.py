"""Big documents: read and chunked as a stream, staged a batch per transaction, published whole in
one transaction, resumed after a kill; progress counts chunks with an ETA, also without a terminal.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beto_search import SearchEngine
from beto_search.chunking import Chunker
from beto_search.readers import ReaderOptions, clean_text, decode_bytes, iter_text_blocks
from beto_search.types import Document
from tests.encoders import SmallHashEncoder

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
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
    "niño",
    "canción",
    "pingüino",
    "España",
]


def big_text(n_sentences: int, seed: int = 0, marker: str = "") -> str:
    """Spanish-looking text of sentences and paragraphs, with ``marker`` in its last sentence."""
    rng = random.Random(seed)
    out = ["Un título grande\n\n"]
    for _i in range(n_sentences):
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))))
        out.append(rng.choice([". ", "? ", "! ", ".\n\n", "… "]))
    out.append(f"Al final aparece {marker} y nada más.\n" if marker else "Fin.\n")
    return "".join(out)


def spans(chunks: Iterable[Any]) -> list[tuple[int, int, int, str]]:
    return [(c.ordinal, c.start, c.end, c.text) for c in chunks]


# ----- the streaming chunker ------------------------------------------------------------------
SENTENCE = st.lists(
    st.sampled_from([*list("abcdeñáéíóú ¿¡."), "casa ", "niño", "\n"]), min_size=1, max_size=30
).map("".join)
TEXTS = st.lists(
    st.tuples(SENTENCE, st.sampled_from([". ", "! ", "? ", "\n\n", " ", ".» ", "… "])),
    max_size=120,
).map(lambda pairs: "".join(a + b for a, b in pairs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, cuts=st.lists(st.integers(0, 5000), max_size=30), block=st.sampled_from([8, 64]))
def test_stream_chunks_equal_whole_text_chunks(text: str, cuts: list[int], block: int) -> None:
    """However the text is cut into parts, the windows are those of the whole text."""
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    chunker = Chunker(None, max_tokens=12, overlap=3)
    assert spans(chunker.chunk_stream(parts, block_chars=block)) == spans(chunker.chunk(text))


def test_stream_chunks_equal_with_the_model_tokenizer(tiny_encoder) -> None:
    text = big_text(400, seed=1)
    parts = [text[i : i + 997] for i in range(0, len(text), 997)]
    chunker = Chunker(tiny_encoder.tokenizer, max_tokens=60, overlap=15)
    whole = chunker.chunk(text)
    streamed = list(chunker.chunk_stream(parts, block_chars=2000))
    assert spans(streamed) == spans(whole)
    assert [c.token_ids for c in streamed] == [c.token_ids for c in whole]


def test_text_blocks_equal_the_whole_file_decoded(tmp_path: Path) -> None:
    """Incremental decoding and NFC across block edges: the same text as reading it whole."""
    nfd = unicodedata.normalize("NFD", "canción del niño pingüino en Cádiz. ")
    text = "\ufeff" + nfd * 8000 + "fin"
    path = tmp_path / "nfd.txt"
    path.write_bytes(text.encode("utf-8"))
    assert "".join(iter_text_blocks(path)) == clean_text(decode_bytes(path.read_bytes()))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("¿Año? ¡Señor! " * 9000).encode("cp1252"))
    assert "".join(iter_text_blocks(latin)) == clean_text(decode_bytes(latin.read_bytes()))


# ----- streamed ingest, in-process ------------------------------------------------------------
class CountingEmbedder:
    """The hash encoder as an embedder hook that counts the chunks it embeds and may stop (as a
    killed run would) after ``stop_after`` batches."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.encoder = SmallHashEncoder()
        self.stop_after = stop_after
        self.chunks = 0

    def __call__(self, batches: Iterable[Any]) -> Iterator[np.ndarray]:
        for i, batch in enumerate(batches):
            if self.stop_after is not None and i >= self.stop_after:
                raise KeyboardInterrupt  # stopped mid-document
            self.chunks += len(batch)
            yield self.encoder.encode_documents(list(batch))


def test_streamed_txt_is_one_whole_document(tmp_path: Path) -> None:
    text = big_text(3000, marker="zarzaparrilla")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "grande.txt").write_text(text, encoding="utf-8")
    streamed = ReaderOptions(stream_over=10_000)
    with SearchEngine.open(tmp_path / "a", SmallHashEncoder()) as engine:
        summary = engine.ingest([docs], streamed)
        assert (summary.added, summary.resumed, summary.skipped) == (1, 0, [])
        doc = engine.get_document("grande.txt")
        assert doc["text"] == text and doc["title"] == "Un título grande"
        assert engine.verify() == []
        hits = engine.search("zarzaparrilla", mode="lexical")
        assert [h.doc_id for h in hits] == ["grande.txt"]
        assert engine.ingest([docs], streamed).unchanged == 1
        chunks = engine.get_document("grande.txt")["chunks"]
        assert engine.repair()["vectors"] == len(chunks)
        assert engine.get_document("grande.txt")["text"] == text
    # the same chunks as the file read whole
    with SearchEngine.open(tmp_path / "b", SmallHashEncoder()) as engine:
        engine.ingest([docs])
        assert engine.get_document("grande.txt")["chunks"] == [
            {**c, "chunk_id": i + 1} for i, c in enumerate(chunks)
        ]


def test_stopped_stream_is_invisible_then_resumes_without_reencoding(tmp_path: Path) -> None:
    text = big_text(6000, marker="zarzaparrilla")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "grande.txt").write_text(text, encoding="utf-8")
    (docs / "a-nota.txt").write_text("Una nota corta sobre zarzaparrilla.\n", encoding="utf-8")
    opts = ReaderOptions(stream_over=10_000)
    index = tmp_path / "idx"
    with SearchEngine.open(index, SmallHashEncoder()) as engine:
        with pytest.raises(KeyboardInterrupt):
            engine.ingest([docs], opts, embedder=CountingEmbedder(stop_after=3))
        # two batches of the big document are staged, none of it is searchable
        assert [h.doc_id for h in engine.search("zarzaparrilla", mode="lexical")] == ["a-nota.txt"]
        assert engine.get_document("grande.txt") is None
        assert engine.verify() == []
        assert engine.info()["staged"] == [
            {"doc_id": "grande.txt", "source": str(docs / "grande.txt"), "chunks": 256}
        ]
        counting = CountingEmbedder()
        summary = engine.ingest([docs], opts, embedder=counting)
        total = len(engine.get_document("grande.txt")["chunks"])
        assert summary.resumed == 256 and summary.added == 1 and summary.unchanged == 1
        assert counting.chunks == summary.chunks == total - 256  # nothing staged re-encoded
        assert engine.get_document("grande.txt")["text"] == text
        assert {h.doc_id for h in engine.search("zarzaparrilla", mode="lexical")} == {
            "grande.txt",
            "a-nota.txt",
        }
        assert engine.verify() == [] and engine.info()["staged"] == []


def test_changed_content_drops_stale_staging(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    big = docs / "grande.txt"
    big.write_text(big_text(6000, seed=1), encoding="utf-8")
    opts = ReaderOptions(stream_over=10_000)
    with SearchEngine.open(tmp_path / "idx", SmallHashEncoder()) as engine:
        with pytest.raises(KeyboardInterrupt):
            engine.ingest([docs], opts, embedder=CountingEmbedder(stop_after=2))
        assert engine.info()["staged"][0]["chunks"] == 256
        new = big_text(5000, seed=2, marker="cambiado")
        big.write_text(new, encoding="utf-8")
        assert engine.compact()["staged_chunks_dropped"] == 256  # its file changed
        assert engine.info()["staged"] == []
        with pytest.raises(KeyboardInterrupt):
            engine.ingest([docs], opts, embedder=CountingEmbedder(stop_after=1))
        big.write_text(new + "Más.\n", encoding="utf-8")
        counting = CountingEmbedder()
        summary = engine.ingest([docs], opts, embedder=counting)
        assert summary.resumed == 0 and counting.chunks == summary.chunks  # other content
        assert engine.get_document("grande.txt")["text"] == new + "Más.\n"
        assert engine.verify() == [] and engine.info()["staged"] == []


def test_streamed_document_given_to_add(tmp_path: Path) -> None:
    """Any Document with ``parts`` (a PDF reader's pages) streams; locations are collected."""
    pages = [f"Página {i}. " + big_text(40, seed=i) for i in range(1, 30)]

    def parts() -> Iterator[tuple[str, dict[str, Any]]]:
        for i, page in enumerate(pages, start=1):
            yield page, {"page": i}

    with SearchEngine.open(tmp_path / "idx", SmallHashEncoder()) as engine:
        summary = engine.add([Document(id="libro", text="", title="Libro", parts=parts)])
        assert summary.added == 1 and summary.chunks > 1
        assert engine.get_document("libro")["text"] == "".join(pages)
        assert engine.verify() == []
        assert engine.add([Document(id="libro", text="", title="Libro", parts=parts)]).unchanged


# ----- progress -------------------------------------------------------------------------------
def test_progress_lines_without_a_terminal(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "grande.txt").write_text(big_text(4000), encoding="utf-8")
    index = tmp_path / "idx"
    # CliRunner's stderr is not a terminal: auto is log lines
    res = cli_run(
        "ingest", docs, "--index", index, "--progress-every", "0", "--stream-over", "50KB"
    )
    assert res.exit_code == 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) >= 3, res.stderr
    assert lines[0].startswith("embedding: 128/~") and "ETA" in lines[0]
    assert lines[-1].startswith("done: ")
    (docs / "grande.txt").write_text(big_text(4000, seed=5), encoding="utf-8")
    res = cli_run("ingest", docs, "--index", index, "--progress", "json", "--progress-every", "0")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stderr.strip().splitlines()]
    done = records[-1]
    assert done["progress"] == "done" and done["eta_s"] == 0
    steps = records[:-1]
    assert [r["chunks"] for r in steps] == sorted(r["chunks"] for r in steps)
    # the total is estimated from the file's size: close to the true count from the start
    assert all(abs(r["total_estimate"] - done["chunks"]) <= 0.2 * done["chunks"] for r in steps)
    assert all(r["eta_s"] is not None for r in steps)
    res = cli_run("ingest", docs, "--index", index, "-q", "--progress-every", "0")
    assert res.exit_code == 0 and res.stderr == ""


def test_bad_stream_over_is_one_sentence(cli_run, tmp_path: Path) -> None:
    res = cli_run("ingest", tmp_path, "--index", tmp_path / "i", "--stream-over", "big")
    assert res.exit_code == 2 and "is not a size like 4MB" in res.output


# ----- kill -9 in the middle of a big document (a real process) --------------------------------
def _cli() -> list[str]:
    script = Path(sys.executable).parent / "beto-search"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from beto_search.cli import main; main()"]


def _staged(db: Path) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM staged_chunks").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_in_a_big_document_then_resume(tiny_model: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    text = big_text(8000, seed=3, marker="zarzaparrilla")  # ~1 MB, ~1,500 chunks
    (docs / "grande.txt").write_text(text, encoding="utf-8")
    index = tmp_path / "idx"
    env = dict(os.environ, BETO_SEARCH_MODEL=str(tiny_model), HF_HUB_OFFLINE="1")
    ingest = [
        *_cli(),
        "ingest",
        str(docs),
        "--index",
        str(index),
        "--json",
        "--stream-over",
        "200KB",
    ]
    ingest += ["--chunk-tokens", "128", "--overlap", "16"]
    proc = subprocess.Popen(ingest, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        while proc.poll() is None and _staged(index / "index.db") < 2 * 128:
            assert time.monotonic() - start < 300, "no batch was staged"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it was killed"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_cli(), *args], env=env, capture_output=True, text=True, timeout=600
        )

    found = run("query", "zarzaparrilla", "--index", str(index), "--mode", "lexical")
    assert found.returncode == 0 and "grande.txt" not in found.stdout  # never half a document
    checked = run("verify", "--index", str(index))
    assert checked.returncode == 0, checked.stderr
    assert "ok: 0 documents, 0 chunks" in checked.stdout
    assert "staged: grande.txt" in checked.stdout

    again = run(*ingest[1:])
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["added"] == 1 and summary["resumed"] >= 2 * 128
    found = run("query", "zarzaparrilla", "--index", str(index), "--mode", "lexical", "--json")
    assert found.returncode == 0 and "grande.txt" in found.stdout
    checked = run("verify", "--index", str(index))
    assert checked.returncode == 0, checked.stderr
    assert "staged:" not in checked.stdout
    info = json.loads(run("info", "--index", str(index), "--json").stdout)
    assert info["documents"] == 1 and info["staged"] == []
    assert summary["resumed"] + summary["chunks"] == info["chunks"]  # each chunk encoded once
    with SearchEngine.open(index, create=False) as engine:
        assert engine.get_document("grande.txt")["text"] == text


# ----- memory ---------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    import psutil
    sys.path.insert(0, sys.argv[3])
    from encoders import SmallHashEncoder
    from beto_search import SearchEngine
    from beto_search.readers import ReaderOptions

    src, index, stream_over = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[4])
    engine = SearchEngine.open(index, SmallHashEncoder())
    engine.add([{"id": "warm", "text": "calentar todo antes de medir"}])
    engine.search("calentar", mode="hybrid")
    proc, peak, running = psutil.Process(), [0], [True]

    def sample():  # ru_maxrss would include whatever start-up did: sample during the ingest
        while running[0]:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    before = proc.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    summary = engine.ingest([src], ReaderOptions(stream_over=stream_over))
    running[0] = False
    sampler.join()
    peak = max(peak[0], proc.memory_info().rss)
    print(json.dumps({"added": summary.added, "chunks": summary.chunks, "growth": peak - before}))
""")


@pytest.mark.slow
def test_20mb_text_streams_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    path = src / "grande.txt"
    with path.open("w", encoding="utf-8") as fh:
        seed = 0
        while fh.tell() < 20 * 2**20:
            fh.write(big_text(2000, seed=seed, marker="zarzaparrilla"))
            seed += 1
    size = path.stat().st_size
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)

    def ingest(stream_over: int, index: str) -> dict[str, int]:
        proc = subprocess.run(
            [
                sys.executable,
                str(script),
                str(src),
                str(tmp_path / index),
                str(Path(__file__).parent),
                str(stream_over),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=ROOT,
            # autotune: a one-off pass when the index first gets big, not the ingest's own cost
            env=dict(
                os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", BETO_SEARCH_AUTOTUNE="0"
            ),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["added"] == 1
        return out

    streamed = ingest(4 * 2**20, "streamed")
    whole = ingest(size + 1, "whole")  # the path before streaming: the file read whole
    print(f"{size} bytes: streamed {streamed}, read whole {whole}")
    # streamed, the text is never held: what grows is the caches (SQLite's, and FAISS catching up
    # with the document's vectors at its end), measured ~20 MB for this 20 MB file, ~8 MB of it
    # while streaming whatever the size (5, 10, 20 MB); read whole it is several times the file
    # (bytes, str, NFC copy, chunks, the row)
    assert streamed["growth"] < size, (streamed, size)
    assert streamed["growth"] < whole["growth"] / 2, (streamed, whole)


def test_stream_of_exactly_one_full_batch_is_published(tmp_path: Path) -> None:
    """128 chunks: the last batch is full, the publishing one has nothing left to embed."""
    sentences = [f"uno dos tres cuatro cinco seis s{i}. " for i in range(128)]  # 8 tokens each

    def parts() -> Iterator[tuple[str, dict[str, Any]]]:
        for s in sentences:
            yield s, {}

    with SearchEngine.open(
        tmp_path / "idx", SmallHashEncoder(), chunk_tokens=8, overlap=0
    ) as engine:
        summary = engine.add([Document(id="justo", text="", parts=parts)])
        assert (summary.added, summary.chunks) == (1, 128)
        assert engine.get_document("justo")["text"] == "".join(sentences)
        assert engine.verify() == []
