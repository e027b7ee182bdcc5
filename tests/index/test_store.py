"""``Store`` on its own (no engine, no encoder): the schema, one transaction per document, filters
bound as data, the lexical statistics, staging, re-embedding's side vectors, the checks, and a
connection per thread. Rows are built as the indexer builds them: chunks from ``Chunker``, terms
from the Spanish analyzer, content hashes from ``ingest.content_hash``."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from beto_search.analyzer import SpanishAnalyzer
from beto_search.chunking import Chunker
from beto_search.errors import IndexCorruptError, InputError, StorageError
from beto_search.index.store import Filter, PreparedDocument, Store, StoredChunk, fold_value
from beto_search.ingest import content_hash
from beto_search.types import Document

DIM = 8
ANALYZER = SpanishAnalyzer()
CHUNKER = Chunker(None, 12, 3)  # small windows: every document below has several chunks

TEXTS = {
    "eco": (
        "El banco central sube los tipos de interés por tercera vez este año. Los mercados "
        "esperaban la subida y la bolsa apenas se movió. La inflación sigue por encima del "
        "objetivo y el banco no descarta nuevas subidas en los próximos meses."
    ),
    "dep": (
        "La selección gana el campeonato con un gol en el último minuto. El entrenador "
        "celebró la victoria con los jugadores y la afición llenó las calles de la capital "
        "hasta la madrugada."
    ),
    "sal": (
        "El hospital abre una nueva unidad de cardiología. Los médicos atenderán a los "
        "pacientes de toda la provincia y el centro contratará a veinte enfermeras este año."
    ),
}
META = {
    "eco": {"categoria": "Economía", "pais": "España", "anio": 2024},
    "dep": {"categoria": "deportes", "pais": "México", "anio": 2023},
    "sal": {"categoria": "salud", "pais": "españa"},
}


def vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def prepare(doc: Document, seed: int = 0) -> PreparedDocument:
    """A document as the indexer hands it to ``put_documents``."""
    chunks = CHUNKER.chunk(doc.text)
    return PreparedDocument(
        doc,
        content_hash(doc),
        chunks,
        vectors(len(chunks), seed),
        [ANALYZER.analyze(c.text) for c in chunks],
    )


def doc(key: str, text: str | None = None) -> Document:
    return Document(
        id=f"{key}.txt",
        text=TEXTS[key] if text is None else text,
        title=key.upper(),
        source=f"/corpus/{key}.txt",
        metadata=META[key],
        locations=[(0, {"page": 1})],
    )


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "index.db")
    yield s
    s.close()


def put(store: Store, *prepared: PreparedDocument) -> None:
    with store.write():
        store.put_documents(list(prepared))


def rows(store: Store, sql: str, *args: object) -> list[tuple]:
    return store.conn.execute(sql, args).fetchall()


def table_counts(store: Store) -> dict[str, int]:
    return {
        t: rows(store, f"SELECT count(*) FROM {t}")[0][0]
        for t in ("documents", "chunks", "embeddings", "chunks_fts")
    }


# ----- schema ----------------------------------------------------------------------------------
def test_schema_is_created_on_open_and_an_existing_index_reopens(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with pytest.raises(InputError, match="no index database"):
        Store(path, create=False)
    store = Store(path)
    names = {r[0] for r in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "manifest",
        "meta",
        "documents",
        "embeddings",
        "chunks",
        "changes",
        "chunks_fts",
    } <= names
    assert rows(store, "PRAGMA journal_mode") == [("wal",)]
    put(store, prepare(doc("eco")))
    store.close()
    again = Store(path, create=False)
    assert again.counts()["documents"] == 1
    again.close()


def test_an_index_made_before_locations_gains_the_column_on_open(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE documents (id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL,"
        " text TEXT NOT NULL, metadata TEXT NOT NULL, content_hash TEXT NOT NULL,"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )
    old.execute("INSERT INTO documents VALUES ('a', 's', 't', 'x', '{}', 'h', 'c', 'u')")
    old.commit()
    old.close()
    store = Store(path)
    assert store.document("a") == {
        "id": "a",
        "source": "s",
        "title": "t",
        "text": "x",
        "metadata": {},
        "locations": [],
    }
    assert rows(store, "SELECT locations FROM documents") == [("[]",)]
    store.close()


def test_a_file_that_is_not_sqlite_is_a_corrupt_index(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    path.write_bytes(b"this is not a database, just bytes" * 100)
    with pytest.raises(IndexCorruptError, match="cannot be read"):
        Store(path)


# ----- documents: one transaction ---------------------------------------------------------------
def test_a_documents_rows_are_written_together_and_deleted_together(store: Store) -> None:
    eco, dep = prepare(doc("eco"), seed=1), prepare(doc("dep"), seed=2)
    put(store, eco, dep)
    n = len(eco.chunks) + len(dep.chunks)
    assert len(eco.chunks) > 1 and len(dep.chunks) > 1
    assert table_counts(store) == {"documents": 2, "chunks": n, "embeddings": n, "chunks_fts": n}
    assert store.counts() == {"documents": 2, "chunks": n, "embeddings": n}
    # every chunk has its vector and its analyzed terms under the same id
    ids = store.doc_chunk_ids("eco.txt")
    got_ids, got = store.embeddings(ids, DIM)
    assert got_ids.tolist() == ids
    np.testing.assert_array_equal(got, eco.vectors)
    assert store.lexical_terms(ids) == dict(zip(ids, eco.terms))
    chunk = store.chunks_by_id(ids[:1])[ids[0]]
    assert chunk == StoredChunk(
        ids[0], "eco.txt", 0, 0, eco.chunks[0].end, eco.chunks[0].text, "ECO", "/corpus/eco.txt",
        META["eco"],
    )  # fmt: skip
    assert store.document("eco.txt") == {
        "id": "eco.txt",
        "source": "/corpus/eco.txt",
        "title": "ECO",
        "text": TEXTS["eco"],
        "metadata": META["eco"],
        "locations": [(0, {"page": 1})],
    }
    assert store.hashes(["eco.txt", "dep.txt", "nope"]) == {
        "eco.txt": eco.content_hash,
        "dep.txt": dep.content_hash,
    }
    assert rows(store, "SELECT op, count(*) FROM changes GROUP BY op") == [("add", n)]
    seq = store.seq()
    assert seq == n

    with store.write():
        assert store.delete_documents(["eco.txt", "missing"]) == ["eco.txt"]
    left = len(dep.chunks)
    assert table_counts(store) == {
        "documents": 1,
        "chunks": left,
        "embeddings": left,
        "chunks_fts": left,
    }
    assert store.document("eco.txt") is None
    assert store.chunks_by_id(ids) == {}
    assert store.changes_since(seq) == [(seq + i + 1, "del", cid) for i, cid in enumerate(ids)]
    assert store.problems(DIM) == []


def test_an_error_inside_a_write_leaves_nothing(store: Store) -> None:
    put(store, prepare(doc("dep")))
    before, seq = table_counts(store), store.seq()
    with pytest.raises(RuntimeError, match="boom"), store.write():
        store.put_documents([prepare(doc("eco"))])
        store.delete_documents(["dep.txt"])
        raise RuntimeError("boom")
    assert table_counts(store) == before and store.seq() == seq
    # an SQLite error mid-way is a one-sentence StorageError, and nothing was changed either
    with pytest.raises(StorageError, match="nothing was changed"), store.write():
        store.put_documents([prepare(doc("eco"))])
        store.conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert table_counts(store) == before and store.seq() == seq
    assert store.hashes(["eco.txt"]) == {}


def test_a_replaced_document_gets_new_chunk_ids_and_keeps_its_created_at(store: Store) -> None:
    put(store, prepare(doc("eco")))
    old_ids = store.doc_chunk_ids("eco.txt")
    (created,) = rows(store, "SELECT created_at FROM documents")[0]
    rows(store, "UPDATE documents SET created_at = '2001-01-01T00:00:00+00:00'")
    new = prepare(doc("eco", "Un texto nuevo y más corto sobre el banco central."), seed=5)
    put(store, new)
    new_ids = store.doc_chunk_ids("eco.txt")
    assert min(new_ids) > max(old_ids)  # AUTOINCREMENT: ids are never reused
    assert store.chunks_by_id(old_ids) == {}
    assert store.hashes(["eco.txt"]) == {"eco.txt": new.content_hash}
    assert rows(store, "SELECT created_at FROM documents") == [("2001-01-01T00:00:00+00:00",)]
    assert created != "2001-01-01T00:00:00+00:00"
    assert table_counts(store)["chunks_fts"] == len(new_ids)


# ----- filters ---------------------------------------------------------------------------------
HOSTILE = [
    "x' OR '1'='1",
    "economía'); DROP TABLE documents; --",
    '" OR 1=1 --',
    "%",
    "*",
    "\\",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_filter_values_are_bound_as_data_never_as_sql(store: Store, value: str) -> None:
    put(store, prepare(doc("eco")), prepare(doc("dep")))
    filters = [Filter(w) for w in ({"categoria": value}, {"title": value}, {"source": value})]
    filters.append(Filter({"doc_id": value}))
    if not set(value) & set("*?["):  # a glob's own wildcards are what it is for
        filters.append(Filter({}, source_glob=value))
    for flt in filters:
        clause, params = flt.sql()
        assert value not in clause
        assert value in params or fold_value(value) in params
        assert store.filtered_chunk_ids(flt).size == 0
        assert store.lexical('"banc"', 10, flt) == []
    assert store.counts()["documents"] == 2  # nothing was dropped
    # a document whose stored value IS that text matches it, as data
    hostile = doc("sal")
    hostile.metadata = {"categoria": value}
    put(store, prepare(hostile))
    found = store.filtered_chunk_ids(Filter({"categoria": value}))
    assert sorted(found.tolist()) == store.doc_chunk_ids("sal.txt")


def test_filters_fold_text_and_glob_sources(store: Store) -> None:
    put(store, prepare(doc("eco")), prepare(doc("dep")), prepare(doc("sal")))

    def docs_of(flt: Filter) -> set[str]:
        return {
            c.doc_id for c in store.chunks_by_id(store.filtered_chunk_ids(flt).tolist()).values()
        }

    assert docs_of(Filter({"pais": "ESPANA"})) == {"eco.txt", "sal.txt"}
    assert docs_of(Filter({"anio": "2024"})) == {"eco.txt"}
    assert docs_of(Filter({"title": "dep"})) == {"dep.txt"}
    assert docs_of(Filter({}, source_glob="/corpus/[ds]*")) == {"dep.txt", "sal.txt"}
    assert docs_of(Filter({"categoria": "economia", "pais": "españa"})) == {"eco.txt"}
    assert store.missing_fields(Filter({"pais": "x", "autor": "y"})) == ["autor"]
    with pytest.raises(InputError, match="filter key"):
        Filter({"a'b": "x"}).sql()


# ----- lexical statistics -----------------------------------------------------------------------
def direct_counts(store: Store) -> tuple[tuple[int, int], Counter[str]]:
    """(rows, tokens) and each term's number of rows, counted here from the stored terms."""
    stored = [r[0] for r in rows(store, "SELECT terms FROM chunks_fts")]
    df: Counter[str] = Counter()
    for terms in stored:
        df.update(set(terms.split()))
    return (len(stored), sum(len(t.split()) for t in stored)), df


def assert_statistics_match(store: Store) -> None:
    totals, df = direct_counts(store)
    assert store.lexical_totals() == totals
    terms = [*sorted(df), "inexistente", 'com"illa']
    assert store.doc_frequencies(terms) == {t: df.get(t, 0) for t in terms}


def test_lexical_statistics_equal_a_direct_count_through_writes(store: Store) -> None:
    assert store.lexical_totals() == (0, 0)
    eco, dep = prepare(doc("eco")), prepare(doc("dep"))
    put(store, eco, dep)
    totals, df = direct_counts(store)
    assert totals == (
        len(eco.chunks) + len(dep.chunks),
        sum(len(t.split()) for t in eco.terms + dep.terms),
    )
    assert df["banc"] >= 2  # a term of several chunks
    assert_statistics_match(store)
    put(store, prepare(doc("eco", "El banco cierra sus oficinas los sábados por la tarde.")))
    assert_statistics_match(store)
    with store.write():
        store.delete_documents(["dep.txt"])
    assert_statistics_match(store)
    ids = store.chunk_ids().tolist()
    assert store.lexical_terms(ids) == dict(rows(store, "SELECT rowid, terms FROM chunks_fts"))


def test_lexical_totals_are_counted_again_after_a_writer_that_did_not_keep_them(
    store: Store,
) -> None:
    put(store, prepare(doc("eco")))
    # an older version's write: FTS and change rows, no update of the kept totals
    with store.write():
        store.conn.execute("INSERT INTO chunks_fts(rowid, terms) VALUES (999, 'banc central')")
        store.conn.execute("INSERT INTO changes(op, chunk_id) VALUES ('add', 999)")
    assert_statistics_match(store)
    put(store, prepare(doc("dep")))  # the next write starts from a fresh count
    assert_statistics_match(store)


def test_lexical_candidates_are_ranked_by_bm25(store: Store) -> None:
    put(store, prepare(doc("eco")), prepare(doc("dep")), prepare(doc("sal")))
    match = ANALYZER.fts_query("banco central")
    assert match is not None
    hits = store.lexical(match, 10)
    found = store.chunks_by_id([cid for cid, _ in hits])
    assert {c.doc_id for c in found.values()} == {"eco.txt"}
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert store.lexical(match, 10, Filter({"categoria": "deportes"})) == []


# ----- staging ---------------------------------------------------------------------------------
def test_staging_begin_stage_resume_publish_and_drop(store: Store) -> None:
    text = TEXTS["eco"] + " " + TEXTS["sal"]
    streamed = Document(id="big.txt", text="", title="BIG", source="", metadata={"k": 1})
    chunks = CHUNKER.chunk(text)
    vecs = vectors(len(chunks), 7)
    terms = [ANALYZER.analyze(c.text) for c in chunks]
    half = len(chunks) // 2
    with store.write():
        store.ensure_staging_tables()
        assert store.begin_staging("big.txt", "h1", "") == (0, None)
        store.stage_chunks("big.txt", "h1", chunks[:half], vecs[:half], terms[:half])
    # a re-run with the same content resumes after the last staged chunk
    with store.write():
        assert store.begin_staging("big.txt", "h1", "") == (
            half,
            (chunks[half - 1].start, chunks[half - 1].end),
        )
    assert store.staged() == [
        {
            "doc_id": "big.txt",
            "content_hash": "h1",
            "source": "",
            "size": None,
            "mtime_ns": None,
            "chunks": half,
        }
    ]
    # nothing staged is visible yet
    assert table_counts(store) == {"documents": 0, "chunks": 0, "embeddings": 0, "chunks_fts": 0}
    assert store.lexical('"banc"', 10) == []
    with store.write():
        store.stage_chunks("big.txt", "h1", chunks[half:], vecs[half:], terms[half:])
        assert store.publish_staged(streamed, "h1") == len(chunks)
    assert store.staged() == []
    ids = store.doc_chunk_ids("big.txt")
    assert len(ids) == len(chunks)
    np.testing.assert_array_equal(store.embeddings(ids, DIM)[1], vecs)
    assert store.lexical_terms(ids) == dict(zip(ids, terms))
    assert store.document("big.txt")["text"] == text  # put together from the chunks
    assert store.document("big.txt", whole=False)["text"] == ""
    assert store.hashes(["big.txt"]) == {"big.txt": "h1"}
    assert store.problems(DIM) == []
    assert_statistics_match(store)

    # other content under the same id drops the old staging; drop_staging forgets the rest
    with store.write():
        store.stage_chunks("big.txt", "h2", chunks[:2], vecs[:2], terms[:2])
        assert store.begin_staging("big.txt", "h3", "") == (0, None)
        store.stage_chunks("big.txt", "h3", chunks[:3], vecs[:3], terms[:3])
        assert store.drop_staging("big.txt") == 3
        assert store.drop_staging() == 0
    assert store.staged() == []
    assert store.counts()["chunks"] == len(chunks)  # the published version stays


def test_staged_chunks_written_out_of_order_start_over(store: Store) -> None:
    chunks = CHUNKER.chunk(TEXTS["dep"])
    vecs, terms = vectors(len(chunks), 3), [ANALYZER.analyze(c.text) for c in chunks]
    with store.write():
        store.ensure_staging_tables()
        store.begin_staging("d", "h", "")
        store.stage_chunks("d", "h", chunks[1:3], vecs[1:3], terms[1:3])  # ordinal 0 missing
    with store.write():
        assert store.begin_staging("d", "h", "") == (0, None)
    assert store.staged() == []
    assert store.staging_problems(DIM) == []  # the misplaced chunks are gone


def test_staging_problems_are_found(store: Store) -> None:
    assert store.staging_problems(DIM) == []  # no staging tables yet
    chunks = CHUNKER.chunk(TEXTS["dep"])[:2]
    with store.write():
        store.ensure_staging_tables()
        store.begin_staging("d", "h", "")
        store.stage_chunks("d", "h", chunks, vectors(2, 1, dim=DIM + 1), ["a", "b"])
        store.stage_chunks("orphan", "h", chunks, vectors(2, 1), ["a", "b"])
    assert store.staging_problems(DIM) == [
        f"2 staged chunks have no vector of dimension {DIM}",
        "2 staged chunks belong to no staged document",
    ]


# ----- re-embedding's side vectors --------------------------------------------------------------
def test_next_vectors_start_put_and_switch(store: Store) -> None:
    put(store, prepare(doc("eco")), prepare(doc("dep")))
    with store.write():
        store.write_manifest({"model": "old", "dimension": DIM, "generation": 0})
    assert store.reembed_target() is None and store.next_vector_count() == 0
    new_dim = DIM + 4
    target = {"model": "new", "dimension": new_dim}
    with store.write():
        store.ensure_reembed_tables()
        store.start_reembed(target)
    assert store.reembed_target() == target
    all_ids = store.chunk_ids().tolist()
    assert store.count_without_next_vector() == len(all_ids)
    first = store.chunks_without_next_vector(-1, 2)
    assert [cid for cid, _ in first] == sorted(all_ids)[:2]
    assert first[0][1] == store.chunks_by_id([first[0][0]])[first[0][0]].text
    new = vectors(len(all_ids), 11, dim=new_dim)
    with store.write():
        store.put_next_vectors(sorted(all_ids), new)
    assert store.next_vector_count() == len(all_ids)
    assert store.count_without_next_vector() == 0
    assert store.chunks_without_next_vector(-1, 10) == []
    # a document deleted meanwhile leaves side vectors of no chunk: dropped
    dep_ids = store.doc_chunk_ids("dep.txt")
    with store.write():
        store.delete_documents(["dep.txt"])
        store.drop_orphan_next_vectors()
    assert store.next_vector_count() == len(all_ids) - len(dep_ids)
    seq = store.seq()
    with store.write():
        store.switch_to_next_vectors({**target, "generation": 1})
    eco_ids = store.doc_chunk_ids("eco.txt")
    got_ids, got = store.embeddings(eco_ids, new_dim)
    wanted = dict(zip(sorted(all_ids), new))
    np.testing.assert_array_equal(got, np.stack([wanted[i] for i in got_ids]))
    assert store.reembed_target() is None and store.next_vector_count() == 0
    assert store.manifest() == {"model": "new", "dimension": new_dim, "generation": 1}
    state = store.cache_state()
    assert (state.seq, state.floor, state.generation) == (seq + 1, seq + 1, 1)
    assert store.changes_since(0) == []  # the change log is dropped: every cache rebuilds
    assert store.problems(new_dim) == []
    assert store.problems(DIM) == [f"{len(eco_ids)} chunks have no vector of dimension {DIM}"]
    assert_statistics_match(store)


def test_start_reembed_with_another_target_forgets_its_vectors(store: Store) -> None:
    put(store, prepare(doc("eco")))
    ids = store.chunk_ids().tolist()
    with store.write():
        store.ensure_reembed_tables()
        store.start_reembed({"model": "a"})
        store.put_next_vectors(ids, vectors(len(ids), 1))
        store.start_reembed({"model": "b"})
    assert store.reembed_target() == {"model": "b"}
    assert store.next_vector_count() == 0


# ----- checks ----------------------------------------------------------------------------------
CORRUPTIONS = {
    "short vector": (
        "UPDATE embeddings SET vector = x'00' WHERE chunk_id = (SELECT min(id) FROM chunks)",
        f"1 chunks have no vector of dimension {DIM}",
    ),
    "missing vector": (
        "DELETE FROM embeddings WHERE chunk_id = (SELECT max(id) FROM chunks)",
        f"1 chunks have no vector of dimension {DIM}",
    ),
    "orphan vector": (
        "INSERT INTO embeddings(chunk_id, vector) VALUES (12345, zeroblob(32))",
        "1 vectors belong to no chunk",
    ),
    "missing fts row": (
        "DELETE FROM chunks_fts WHERE rowid = (SELECT min(id) FROM chunks)",
        "the lexical index has {fts} rows for {chunks} chunks",
    ),
    "gap in the spans": (
        "DELETE FROM chunks WHERE id = (SELECT min(id) FROM chunks)",
        "1 documents are not covered by their chunks",
    ),
    "metadata not json": (
        "UPDATE documents SET metadata = '{broken' WHERE id = 'dep.txt'",
        "1 documents have stored metadata that is not valid JSON (dep.txt)",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_row_is_a_problem(store: Store, name: str) -> None:
    put(store, prepare(doc("eco")), prepare(doc("dep")))
    assert store.problems(DIM) == [] and store.integrity_check() == []
    sql, message = CORRUPTIONS[name]
    with store.write():
        store.conn.execute(sql)
    counts = table_counts(store)
    found = store.problems(DIM)
    assert any(
        message.format(fts=counts["chunks_fts"], chunks=counts["chunks"]) in p for p in found
    )


@pytest.mark.parametrize("blob", ["x'00000000'", "x'0000'"], ids=["one float", "two bytes"])
def test_a_short_vector_names_its_document_and_fails_reads(store: Store, blob: str) -> None:
    """A vector of the wrong size is a one-sentence IndexCorruptError, even when its bytes are
    not a whole number of floats."""
    put(store, prepare(doc("eco")), prepare(doc("dep")))
    bad = store.doc_chunk_ids("dep.txt")[1]
    with store.write():
        store.conn.execute(f"UPDATE embeddings SET vector = {blob} WHERE chunk_id = ?", (bad,))
    assert store.documents_missing_vectors(DIM) == ["dep.txt"]
    with pytest.raises(IndexCorruptError, match="run verify"):
        store.embeddings(store.chunk_ids().tolist(), DIM)
    with pytest.raises(IndexCorruptError, match="run verify"):
        list(store.iter_embeddings(DIM))


# ----- connections -----------------------------------------------------------------------------
def test_each_thread_gets_its_own_connection_and_snapshot(store: Store) -> None:
    put(store, prepare(doc("eco")))
    conns: dict[str, sqlite3.Connection] = {}
    in_snapshot = threading.Event()
    written = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        conns["reader"] = store.conn
        with store.snapshot():
            seen.append(store.counts()["documents"])
            in_snapshot.set()
            assert written.wait(10)
            seen.append(store.counts()["documents"])  # the same state as its snapshot began
        seen.append(store.counts()["documents"])

    def writer() -> None:
        assert in_snapshot.wait(10)
        conns["writer"] = store.conn
        put(store, prepare(doc("dep")))
        written.set()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == [1, 1, 2]
    assert conns["reader"] is not conns["writer"]
    assert store.conn is store.conn  # one connection per thread, kept
    assert store.conn not in conns.values()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.conn  # noqa: B018
    with pytest.raises(sqlite3.ProgrammingError):  # every thread's connection was closed
        conns["reader"].execute("SELECT 1")


def test_snapshot_nested_in_a_write_is_that_write(store: Store) -> None:
    with store.write():
        store.put_documents([prepare(doc("eco"))])
        with store.snapshot():
            assert store.in_snapshot()
            assert store.counts()["documents"] == 1  # sees its own uncommitted write
        assert store.in_snapshot()  # the nested snapshot did not commit the write
    assert not store.in_snapshot()
