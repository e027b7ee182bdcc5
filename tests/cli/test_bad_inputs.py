"""Bad inputs: encodings, BOMs, NULs, binary and empty files, malformed records, huge files and
fields, Unicode normalisation, hostile folders, duplicate ids and arbitrary queries.

Every skip must be reported with its reason (``--strict`` turns skips into a non-zero exit); no
input may crash an ingest or a query.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beto_search import SearchEngine
from beto_search.readers import ReaderOptions, ReadReport, clean_text, iter_files
from tests.encoders import SmallHashEncoder as HashEncoder
from tests.paths import ROOT, TESTS

SPANISH = (
    "¿Qué pasó con la canción del niño? ¡Año tras año, el señor Muñoz cantó «Cielito "
    "lindo» en Cádiz! La pingüina comió piñas y acentos: á é í ó ú ü ñ Ñ.\n"
)


def ingest(cli_run, index: Path, *args: str, json_out: bool = True):
    res = cli_run(
        "ingest",
        *args,
        "--index",
        index,
        "--model",
        cli_run.model,
        "-q",
        *(["--json"] if json_out else []),
    )
    summary = (
        json.loads(res.stdout.strip().splitlines()[-1]) if json_out and res.stdout.strip() else None
    )
    return res, summary


def stored(index: Path) -> dict[str, dict]:
    with SearchEngine.open(index, create=False) as engine:
        ids = {c.doc_id for batch in engine.iter_chunks() for c in batch}
        return {i: _doc(engine, i) for i in ids}


def _doc(engine: SearchEngine, doc_id: str) -> dict | None:
    """A stored document without its chunk list (id, source, title, text, metadata)."""
    doc = engine.get_document(doc_id)
    if doc is not None:
        del doc["chunks"]
    return doc


def no_traceback(res) -> None:
    assert "Traceback" not in res.output, res.output


# 1 -------------------------------------------------------------------------------------------
def test_cp1252_and_latin1_detected(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    text = SPANISH * 3 + "Precio: 20 € — “comillas” y más.\n"
    (docs / "cp1252.txt").write_bytes(text.encode("cp1252"))
    latin = SPANISH * 3
    (docs / "latin1.txt").write_bytes(latin.encode("latin-1"))
    rec = {"id": "j1", "text": SPANISH * 2, "title": "Canción"}
    (docs / "records.jsonl").write_bytes(
        (json.dumps(rec, ensure_ascii=False) + "\n").encode("cp1252")
    )
    (docs / "rows.csv").write_bytes(f'id,title,text\nc1,Año,"{SPANISH * 2}"\n'.encode("latin-1"))
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["added"] == 4 and summary["skipped"] == []
    got = stored(tmp_path / "idx")
    assert got["cp1252.txt"]["text"] == text
    assert got["latin1.txt"]["text"] == latin
    assert got["j1"]["text"] == SPANISH * 2 and got["j1"]["title"] == "Canción"
    assert got["c1"]["text"] == SPANISH * 2 and got["c1"]["title"] == "Año"


def test_detection_prefers_cp1252_only_for_western_text() -> None:
    from beto_search.readers import detect_encoding

    assert detect_encoding("año".encode("latin-1")) == "cp1252"  # too short for any detector
    assert detect_encoding(SPANISH.encode("cp1252")) == "cp1252"
    russian = "Сегодня хорошая погода, и мы идём гулять в парк с собакой. " * 3
    assert detect_encoding(russian.encode("cp1251")) == "cp1251"
    czech = "Příliš žluťoučký kůň úpěl ďábelské ódy. " * 3
    assert detect_encoding(czech.encode("cp1250")) == "cp1250"


def test_encoding_option_forces_the_encoding(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "utf8.txt").write_text("canción de cuna para el niño\n", encoding="utf-8")
    res, summary = ingest(cli_run, tmp_path / "idx", docs, "--encoding", "latin-1")
    assert res.exit_code == 0, res.output
    assert stored(tmp_path / "idx")["utf8.txt"]["text"] == "canciÃ³n de cuna para el niÃ±o\n"
    # a short cp1252 text whose detection is ambiguous decodes exactly when forced
    (docs / "utf8.txt").unlink()
    (docs / "short.txt").write_bytes("Señal € “sí”".encode("cp1252"))
    res, summary = ingest(cli_run, tmp_path / "idx2", docs, "--encoding", "cp1252")
    assert stored(tmp_path / "idx2")["short.txt"]["text"] == "Señal € “sí”"
    # an unknown encoding name is a reported skip, not a crash
    res, summary = ingest(cli_run, tmp_path / "idx3", docs, "--encoding", "no-such-codec")
    no_traceback(res)
    assert summary["added"] == 0
    assert [s["where"] for s in summary["skipped"]] == [str(docs / "short.txt")]
    assert "no-such-codec" in summary["skipped"][0]["reason"]


# 2 -------------------------------------------------------------------------------------------
def test_utf8_bom(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    bom = b"\xef\xbb\xbf"
    (docs / "bom.txt").write_bytes(bom + "Título con BOM\nTexto del niño.\n".encode())
    (docs / "bom.md").write_bytes(bom + "# Canción\n\nLetra de la canción.\n".encode())
    (docs / "bom.jsonl").write_bytes(
        bom + b'{"id": "j1", "text": "primera l\xc3\xadnea"}\n{"id": "j2", "text": "segunda"}\n'
    )
    (docs / "bom.csv").write_bytes(bom + b"id,text\nc1,fila con BOM\n")
    (docs / "bom.json").write_bytes(bom + b'[{"id": "k1", "text": "json con BOM"}]')
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["skipped"] == [] and summary["added"] == 6
    got = stored(tmp_path / "idx")
    assert set(got) == {"bom.txt", "bom.md", "j1", "j2", "c1", "k1"}
    assert got["bom.txt"]["title"] == "Título con BOM"
    assert got["bom.md"]["title"] == "Canción"
    assert got["j1"]["text"] == "primera línea"
    for doc in got.values():
        assert "\ufeff" not in doc["text"] + doc["title"] + doc["id"]


# 3 -------------------------------------------------------------------------------------------
def test_nul_bytes_are_dropped(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    line = "El río Ebro pasa por Zaragoza y desemboca en el Mediterráneo.\n"
    (docs / "nul.txt").write_bytes(("\x00" + line * 10 + "fin\x00\n").encode())  # stray NULs
    (docs / "utf16-ish.txt").write_bytes("texto sin BOM".encode("utf-16-le"))  # NUL-heavy: binary
    (docs / "nul.jsonl").write_bytes(
        b'{"id": "j1", "text": "escape \\u0000 nulo"}\n{"id": "j2", "text": "byte \x00 nulo"}\n'
    )
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    got = stored(tmp_path / "idx")
    assert got["nul.txt"]["text"] == line * 10 + "fin\n"
    assert [s["reason"] for s in summary["skipped"]] == ["binary file, not text"]
    assert got["j1"]["text"] == "escape  nulo" and got["j2"]["text"] == "byte  nulo"
    assert all("\x00" not in d["text"] for d in got.values())


# 4, 5 and the summary ------------------------------------------------------------------------
def test_binary_and_empty_files_skipped_with_reasons_and_strict(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = np.random.default_rng(1)
    (docs / "elf.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64) + bytes(range(256)) * 8)
    (docs / "png.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.bytes(3000))
    (docs / "zip.jsonl").write_bytes(zlib.compress(rng.bytes(5000)) + rng.bytes(5000))
    (docs / "empty.txt").write_bytes(b"")
    (docs / "blank.md").write_text("  \n\t\n   \r\n")
    (docs / "bom-only.txt").write_bytes(b"\xef\xbb\xbf\n")
    (docs / "empty.jsonl").write_text("\n\n")
    (docs / "notext.jsonl").write_text(
        '{"id": "n1", "text": "   "}\n{"id": "n2", "text": "bien"}\n'
    )
    (docs / "good.txt").write_text("Un documento normal sobre la paella valenciana.\n")
    (docs / "image.png").write_bytes(b"\x89PNG")  # not a supported extension: listed, not read
    res, _summary = ingest(cli_run, tmp_path / "idx", docs, json_out=False)
    assert res.exit_code == 0, res.output
    no_traceback(res)
    out = res.stdout
    assert "documents added: 2" in out
    assert "skipped (3): binary file, not text" in out
    assert "skipped (4): empty or whitespace-only" in out
    assert "skipped (1): no text in field 'text'" in out
    assert "skipped (1): unsupported extension .png" in out
    for name in ("elf.txt", "png.txt", "zip.jsonl", "empty.txt", "blank.md", "bom-only.txt"):
        assert str(docs / name) in res.stderr
    assert f"{docs / 'notext.jsonl'}:1: no text in field 'text'" in res.stderr
    assert set(stored(tmp_path / "idx")) == {"good.txt", "n2"}

    strict = cli_run(
        "ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q", "--strict"
    )
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines()[-1] == "Error: 9 inputs were skipped (--strict)."
    assert "unchanged: 2" in strict.stdout


# 6 -------------------------------------------------------------------------------------------
def test_malformed_jsonl_lines_reported_with_file_and_line(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    lines = [
        '{"id": "a", "text": "primero"}',
        '{"id": "b", "text": "sin cerrar"',
        "[1, 2, 3]",
        "",
        "no es json",
        '{"id": "c", "text": "último"}',
        '{"id": "d", "text": 42}',
        '{"id": "e", "text": "truncado',
    ]
    path = docs / "datos.jsonl"
    path.write_text("\n".join(lines))
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["added"] == 2
    skipped = {s["where"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {f"{path}:{n}" for n in (2, 3, 5, 7, 8)}
    assert skipped[f"{path}:2"].startswith("malformed JSON")
    assert skipped[f"{path}:3"] == "not a JSON object"
    assert skipped[f"{path}:7"] == "no text in field 'text'"
    assert set(stored(tmp_path / "idx")) == {"a", "c"}
    res = cli_run("ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q")
    assert f"{path}:5: malformed JSON" in res.stderr
    assert "skipped (3): malformed JSON" in res.stdout


# 7 -------------------------------------------------------------------------------------------
def test_malformed_csv_rows(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    path = docs / "filas.csv"
    path.write_text(
        "id,title,text\n"
        "r1,Uno,texto uno\n"
        "r2,Dos\n"  # too few fields
        "r3,Tres,texto tres,extra\n"  # too many
        'r4,Cuatro,"texto, con coma"\n'
        "\n"
        'r5,Cinco,"""comillas"" y\nsalto de línea"\n'
        "r6,Seis,\n"  # empty text
        'r7,Siete,"sin cerrar\n',  # an unterminated quote at the end: taken as is
        encoding="utf-8",
    )
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    got = stored(tmp_path / "idx")
    assert set(got) == {"r1", "r4", "r5", "r7"}
    assert got["r7"]["text"] == "sin cerrar\n"
    assert got["r4"]["text"] == "texto, con coma"
    assert got["r5"]["text"] == '"comillas" y\nsalto de línea'
    wheres = [s["where"] for s in summary["skipped"]]
    assert f"{path}:3" in wheres and f"{path}:4" in wheres
    assert all(w.startswith(f"{path}:") for w in wheres) and len(wheres) == 3
    assert {s["reason"] for s in summary["skipped"]} == {
        "malformed CSV row (2 fields, header has 3)",
        "malformed CSV row (4 fields, header has 3)",
        "no text in field 'text'",
    }
    # a header without the text column skips the file with a sentence naming the columns
    (docs / "filas.csv").write_text("id,cuerpo\n1,hola\n")
    res, summary = ingest(cli_run, tmp_path / "idx2", docs)
    assert summary["skipped"][0]["reason"] == "CSV has no 'text' column (columns: id, cuerpo)"


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


# 8 -------------------------------------------------------------------------------------------
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
        env=dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["added"] == n and out["docs"] == n + 1 and out["skipped"] == 0
    # streamed: peak memory grows less than the file's size (measured ~0.5x: SQLite and FAISS
    # caches, the ids seen); reading it whole would cost ~3x (bytes, str, lines, Documents)
    assert out["growth"] < size, (out, size)


# 9 -------------------------------------------------------------------------------------------
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


# 10 ------------------------------------------------------------------------------------------
def _hostile_tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "uno.txt").write_text("Documento uno sobre montañas.\n")
    (root / "a" / "b" / "dos.txt").write_text("Documento dos sobre ríos.\n")
    (root / "a" / "b" / "loop").symlink_to(root / "a")  # a folder loop
    (root / "self").symlink_to(root)  # the root itself
    (root / "bucle.txt").symlink_to(root / "bucle.txt")  # a file symlink loop
    (root / "roto.txt").symlink_to(root / "no-existe.txt")  # dangling
    (root / "secreto.txt").write_text("No deberías poder leer esto.\n")
    (root / "cerrada").mkdir()
    (root / "cerrada" / "tres.txt").write_text("Documento tres.\n")
    return root


def test_symlink_loops_and_unreadable_files(
    tiny_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _hostile_tree(tmp_path)
    real_open, real_scandir = pathlib.Path.open, os.scandir

    def guarded_open(self, *args, **kwargs):  # root ignores chmod 000, so refuse like the kernel
        if self.name == "secreto.txt":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    def guarded_scandir(path=".", *args):
        if os.path.basename(os.fspath(path)) == "cerrada":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", guarded_scandir)
    with SearchEngine.open(tmp_path / "idx", tiny_encoder) as engine:
        summary = engine.ingest([root])
        ids = sorted({c.doc_id for batch in engine.iter_chunks() for c in batch})
    assert ids == ["a/b/dos.txt", "a/uno.txt"]  # each once, however many ways lead to them
    reasons = {s.where: s.reason for s in summary.skipped}
    assert reasons[str(root / "secreto.txt")] == "unreadable file (Permission denied)"
    assert reasons[str(root / "cerrada")] == "unreadable folder (Permission denied)"
    assert reasons[str(root / "bucle.txt")] == "unreadable file (Too many levels of symbolic links)"
    assert reasons[str(root / "roto.txt")] == "unreadable file (No such file or directory)"
    assert "symlink loop (folder already visited)" in reasons.values()
    assert summary.added == 2 and summary.files == 2


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="tests run as root, who reads chmod 000 files anyway; "
    "test_symlink_loops_and_unreadable_files simulates EACCES instead",
)
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:  # pragma: no cover - non-root
    root = tmp_path / "docs"
    root.mkdir()
    (root / "secreto.txt").write_text("privado\n")
    (root / "secreto.txt").chmod(0)
    report = ReadReport()
    from beto_search.readers import read_file

    for path, r in iter_files([root], report):
        list(read_file(path, r, ReaderOptions(), report))
    assert report.skips[0].reason.startswith("unreadable file")


# 11 ------------------------------------------------------------------------------------------
def test_duplicate_ids_last_wins_and_counted(cli_run, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "dup.jsonl").write_text(
        '{"id": "x", "text": "primera versión"}\n'
        '{"id": "y", "text": "otro documento"}\n'
        '{"id": "x", "text": "segunda versión"}\n'
        '{"id": "x", "text": "versión final"}\n',
        encoding="utf-8",
    )
    res, summary = ingest(cli_run, tmp_path / "idx", docs)
    assert res.exit_code == 0, res.output
    assert summary["duplicates"] == 2 and summary["added"] == 2
    got = stored(tmp_path / "idx")
    assert got["x"]["text"] == "versión final"
    res = cli_run("ingest", docs, "--index", tmp_path / "idx", "--model", cli_run.model, "-q")
    assert "duplicate ids: 2" in res.stdout
    with SearchEngine.open(tmp_path / "idx", create=False) as engine:
        assert engine.counts()["documents"] == 2
        assert len(engine.get_document("x")["chunks"]) == 1


def test_duplicate_ids_through_add(tiny_encoder, tmp_path: Path) -> None:
    with SearchEngine.open(tmp_path / "idx", tiny_encoder) as engine:
        s = engine.add(
            [{"id": "a", "text": "uno"}, {"id": "a", "text": "dos"}, {"id": "b", "text": "tres"}]
        )
        assert (s.added, s.duplicates) == (2, 1)
        assert engine.get_document("a")["text"] == "dos"


# 12 ------------------------------------------------------------------------------------------
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


def test_queries_through_the_cli(cli_run, corpus_index: Path) -> None:
    for q in ['"sin cerrar', "NOT (río", "x" * 10_000, "😀", "-río", "*", "\x00río"]:
        for mode in ("semantic", "lexical", "hybrid"):
            res = cli_run("query", "--index", corpus_index, "--mode", mode, "--json", "--", q)
            assert res.exit_code == 0, res.output
            json.loads(res.stdout)
    for blank in ("   ", "\n\t", "\x00", "\ufeff \x00"):  # nothing left once cleaned
        res = cli_run("query", blank, "--index", corpus_index)
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert res.stderr.strip() == "Error: The query is empty; give some text to search for."


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
