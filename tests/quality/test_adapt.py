"""``adapt`` (label-free) and ``train`` (labelled): the loop, the written folder, the self-check,
kill -9 and resume, ``adapt --reembed``, and one-line errors for bad inputs. Uses the tiny
BETO-shaped model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from beto_search import BetoEncoder, SearchEngine
from beto_search.cli import cli
from beto_search.index.store import StoredChunk
from beto_search.quality.pseudoqueries import make_pseudo_queries, sentence_spans
from tests.paths import CORPUS, ROOT

SMALL = [CORPUS / "historia", CORPUS / "ciencia", CORPUS / "cocina", CORPUS / "geografia"]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    """Four folders of corpora/es (11 documents) ingested with the tiny model."""
    folder = tmp_path_factory.mktemp("adapt-index") / "idx"
    with SearchEngine.open(folder, encoder=tiny_encoder) as engine:
        engine.ingest(SMALL)
    return folder


@pytest.fixture
def index(small_index: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "idx"
    shutil.copytree(small_index, dest)
    return dest


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


def chunk(cid: int, doc: str, text: str) -> StoredChunk:
    return StoredChunk(cid, doc, 0, 0, len(text), text, "", "", {})


# ----- pseudo-queries -------------------------------------------------------------------------
def test_pseudo_queries_take_the_sentence_out_and_spread_over_chunks() -> None:
    texts = {
        1: "El Imperio inca fue el mayor de América. Su capital era Cusco, en los Andes. "
        "Atahualpa fue capturado por Pizarro en Cajamarca.",
        2: "La paella valenciana lleva arroz y azafrán. Se cocina en una sartén ancha y plana. "
        "El socarrat es la capa tostada del fondo.",
        3: "Un título\n\nSolo una frase larga sin más compañía que ella misma aquí.",
    }
    chunks = [chunk(cid, f"d{cid}", t) for cid, t in texts.items()]
    two = make_pseudo_queries(chunks, 2, seed=1)
    assert len(two) == 2 and {p.chunk_id for p in two} == {1, 2}  # one per chunk first
    every = make_pseudo_queries(chunks, 0, seed=1)
    assert len(every) == 6  # chunk 3: a heading is no query, and its rest is too short
    for pq in every:
        assert pq.query not in pq.positive
        assert pq.query in texts[pq.chunk_id] and pq.doc_id == f"d{pq.chunk_id}"
    assert make_pseudo_queries(chunks, 4, seed=3) == make_pseudo_queries(chunks, 4, seed=3)
    assert [p.qid for p in make_pseudo_queries(chunks, 0, 3)] != [p.qid for p in every]
    text = "¿Qué es? Es esto.  Y aquello…\nFin"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "¿Qué es?",
        "Es esto.",
        "Y aquello…",
        "Fin",
    ]


def test_batches_never_repeat_a_document_and_stay_full_when_one_document_dominates() -> None:
    from beto_search.quality.adapt import doc_distinct_batches

    docs = ["big"] * 300 + [f"d{i}" for i in range(300)]  # half the examples from one document
    order = list(range(len(docs)))
    import random

    random.Random(0).shuffle(order)
    batches = doc_distinct_batches(docs, order * 2, 8)
    assert batches and all(len({docs[i] for i in b}) == len(b) for b in batches)
    assert sum(len(b) == 8 for b in batches) >= len(batches) - 64
    assert sum(len(b) for b in batches) > 500
    assert {len(b) for b in doc_distinct_batches(["a", "b", "a", "b"], [0, 1, 2, 3], 32)} == {2}


# ----- adapt ----------------------------------------------------------------------------------
def test_adapt_trains_writes_a_loadable_folder_with_card_and_log(
    index: Path, tmp_path: Path, tiny_model: Path
) -> None:
    out = tmp_path / "adapted"
    with SearchEngine.open(index, create=False) as engine:
        manifest = engine.manifest
        assert manifest is not None
        report = engine.adapt(
            out, method="ict", epochs=4, max_steps=16, batch_size=4, lr=1e-3, force=True
        )
    assert report.written and report.steps == 16
    losses = [r["loss"] for r in log_rows(out) if "loss" in r]
    assert len(losses) == report.steps
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first, losses
    # the folder loads as --model, with the index's pooling and window kept
    enc = BetoEncoder(str(out))
    assert enc.pooling == manifest.pooling and enc.max_seq_length == manifest.max_length
    assert enc.dimension == manifest.dimension
    card = (out / "README.md").read_text()
    assert str(tiny_model) in card and "inverse cloze" in card and "| ndcg@10 |" in card
    assert not (out / "checkpoint").exists()
    new = tmp_path / "reindexed"
    with SearchEngine.open(new, model=str(out)) as engine:
        engine.ingest([CORPUS / "cocina"])
        assert engine.manifest.pooling == manifest.pooling
        assert engine.search("paella", k=1, mode="semantic")[0].doc_id


@pytest.mark.parametrize("method", ["crop", "ict-hard", "tsdae"])
def test_other_methods_run(index: Path, tmp_path: Path, method: str) -> None:
    result = run(
        "adapt",
        "--index",
        index,
        "--out",
        tmp_path / method,
        "--method",
        method,
        "--max-steps",
        2,
        "--batch-size",
        4,
        "--force",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["method"] == method and report["written"]
    assert (tmp_path / method / "modules.json").exists()


def test_adapt_refuses_a_worse_model_unless_forced(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beto_search.quality.adapt import RetrievalCheck

    scores = iter([{"ndcg@10": 0.8, "recall@10": 0.9}, {"ndcg@10": 0.5, "recall@10": 0.6}] * 2)
    monkeypatch.setattr(RetrievalCheck, "score", lambda self, model, n: next(scores))
    out = tmp_path / "worse"
    result = run("adapt", "--index", index, "--out", out, "--max-steps", 2, "--batch-size", 4)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "worse" in line and "0.5000 < 0.8000" in line and "--force" in line
    assert not (out / "modules.json").exists()
    result = run(
        "adapt", "--index", index, "--out", out, "--max-steps", 2, "--batch-size", 4, "--force"
    )
    assert result.exit_code == 0, result.output
    assert (out / "modules.json").exists()
    rows = log_rows(out)
    assert sum("loss" in r for r in rows) == 2  # the forced re-run reused the finished training


def test_adapt_reembed_chains_the_two(index: Path, tmp_path: Path) -> None:
    with SearchEngine.open(index, create=False) as engine:
        assert engine.manifest is not None
        before = engine.manifest.generation
        chunks = engine.counts()["chunks"]
    out = tmp_path / "adapted"
    args = ["--out", out, "--max-steps", 2, "--batch-size", 4, "--force", "--reembed"]
    result = run("adapt", "--index", index, *args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["written"] and report["steps"] == 2
    assert report["reembed"]["chunks"] == chunks and report["reembed"]["generation"] == before + 1
    with SearchEngine.open(index, create=False) as engine:
        m = engine.manifest
        assert m is not None and m.generation == before + 1
        assert Path(m.encoder).resolve() == out.resolve()  # the index now runs on the new model
        assert engine.verify() == []
        assert engine.search("paella valenciana", k=1, mode="semantic")[0].doc_id
    # without --reembed the index keeps its model
    result = run("adapt", "--index", index, *args[:-1], "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert "re-embedded" not in result.output
    with SearchEngine.open(index, create=False) as engine:
        assert engine.manifest is not None and engine.manifest.generation == before + 1


def _adapt_cmd(index: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from beto_search.cli import main; main()",
        "adapt",
        "--index",
        str(index),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--max-steps",
        "20",
        "--batch-size",
        "4",
        "--checkpoint-minutes",
        "0",
        "--seed",
        "3",
        "-q",
    ]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run(
    index: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _adapt_cmd(index, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["step"] >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "modules.json").exists()
    done = subprocess.run(
        [*_adapt_cmd(index, out), "--force"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    resumed = [r for r in log_rows(out) if r.get("event") == "resume"]
    assert resumed and resumed[0]["step"] >= 3
    assert [r["step"] for r in log_rows(out) if "loss" in r][-1] == 20
    # same seed, no interruption: the very same weights
    clean = tmp_path / "clean"
    done = subprocess.run(
        [*_adapt_cmd(index, clean), "--force"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    a, b = load_file(str(out / "model.safetensors")), load_file(str(clean / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)


# ----- train ----------------------------------------------------------------------------------
PAIRS = [
    {
        "query": "¿Quién fue Atahualpa?",
        "positive": "Atahualpa fue el último emperador inca, capturado por Pizarro en Cajamarca.",
    },
    {
        "query": "receta de la paella",
        "positive": "La paella valenciana lleva arroz, pollo, conejo, judías verdes y azafrán.",
    },
    {
        "query": "¿qué hacen las plantas con la luz?",
        "positive": "La fotosíntesis convierte la luz en energía química en las plantas.",
    },
    {
        "query": "¿dónde está la cordillera de los Andes?",
        "positive": "Los Andes recorren Sudamérica de norte a sur por el oeste del continente.",
        "negative": "La tortilla española lleva patatas, huevos y, según quién, cebolla.",
    },
    {
        "query": "¿cuándo empezó la revolución francesa?",
        "positive": "La revolución francesa comenzó en 1789 con la toma de la Bastilla.",
    },
    {
        "query": "agujeros negros",
        "positive": "Un agujero negro es una región de la que ni la luz "
        "escapa, por su enorme gravedad.",
    },
]


def test_train_with_pairs_jsonl_and_tsv(index: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PAIRS))
    out = tmp_path / "trained"
    result = run(
        "train",
        "--index",
        index,
        "--out",
        out,
        "--pairs",
        jsonl,
        "--batch-size",
        2,
        "--epochs",
        2,
        "--force",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["written"] and report["check_queries"] == 1 and report["before"]
    assert "dev split" in (out / "README.md").read_text()
    assert any(r.get("event") == "eval" for r in log_rows(out))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("query\tpositive\n" + "".join(f"{p['query']}\t{p['positive']}\n" for p in PAIRS))
    result = run(
        "train",
        "--index",
        index,
        "--out",
        tmp_path / "t2",
        "--pairs",
        tsv,
        "--batch-size",
        2,
        "--max-steps",
        1,
        "--force",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t2" / "modules.json").exists()


def test_train_with_queries_and_qrels(index: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    qrels = tmp_path / "qrels.tsv"
    docs = [
        "imperio-inca.txt",
        "revolucion-francesa.txt",
        "fotosintesis.txt",
        "paella-valenciana.txt",
        "tortilla-espanola.md",
        "cordillera-andes.txt",
    ]
    queries.write_text(
        "".join(
            json.dumps({"_id": f"q{i}", "text": f"pregunta sobre {d[:-4]}"}) + "\n"
            for i, d in enumerate(docs)
        )
    )
    qrels.write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d}\t2\n" for i, d in enumerate(docs))
    )
    out = tmp_path / "trained"
    result = run(
        "train",
        "--index",
        index,
        "--out",
        out,
        "--queries",
        queries,
        "--qrels",
        qrels,
        "--batch-size",
        4,
        "--epochs",
        2,
        "--force",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["command"] == "train" and report["examples"] == 5 and report["check_queries"] == 1
    assert BetoEncoder(str(out)).dimension == 32


# ----- bad inputs -----------------------------------------------------------------------------
def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("Error: ") and "\n" not in text and "Traceback" not in text, text
    for w in words:
        assert w in text, text


def test_bad_inputs_give_one_line_errors(index: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _one_line_error(run("adapt", "--index", tmp_path / "nope", "--out", out), "no index")
    empty = tmp_path / "empty"
    SearchEngine.open(empty).close()
    _one_line_error(run("adapt", "--index", empty, "--out", out), "holds no chunks")
    _one_line_error(
        run("train", "--index", empty, "--out", out, "--pairs", tmp_path / "x.jsonl"),
        "does not exist",
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    _one_line_error(run("train", "--index", index, "--out", out, "--pairs", bad), "bad.jsonl:2:")
    bad.write_text(json.dumps({"query": "sin positivo"}) + "\n")
    _one_line_error(run("train", "--index", index, "--out", out, "--pairs", bad), "'positive'")
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("solo una columna\n")
    _one_line_error(run("train", "--index", index, "--out", out, "--pairs", bad_tsv), "bad.tsv:1:")
    _one_line_error(run("train", "--index", index, "--out", out), "--pairs")
    _one_line_error(
        run("train", "--index", index, "--out", out, "--pairs", bad, "--queries", bad), "not both"
    )
    out.mkdir()
    (out / "modules.json").write_text("[]")
    _one_line_error(run("adapt", "--index", index, "--out", out), "already holds a model")


# ----- adapt --layers: a shallower student ----------------------------------------------------
def test_adapt_layers_writes_a_smaller_student_that_loads_and_searches(
    index: Path, tmp_path: Path
) -> None:
    import numpy as np

    out = tmp_path / "student"
    args = ["--max-steps", 2, "--distil-steps", 3, "--batch-size", 4, "--force", "--reembed"]
    result = run("adapt", "--index", index, "--out", out, "--layers", 1, *args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    d = report["distillation"]
    assert (d["teacher_layers"], d["student_layers"], d["kept"]) == (2, 1, [0])
    assert report["steps"] == 2 and d["steps"] == 3 and d["texts"] > 10
    assert report["after"] == d["student"]
    assert set(d["base"]) == set(d["teacher"]) == set(d["student"]) == {"ndcg@10", "recall@10"}
    assert report["reembed"]["encoder"] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    card = (out / "README.md").read_text()
    assert "--layers 1" in card and "1 of the adapted teacher's 2" in card
    # the student loads as --model: right dimension, normalised vectors, searches the index
    with SearchEngine.open(index, create=False) as engine:
        dim = engine.manifest.dimension
        assert engine.manifest.encoder == str(out)
        assert engine.search("paella", k=1, mode="semantic")[0].doc_id
    enc = BetoEncoder(str(out))
    vecs = enc.encode_documents(["La paella lleva arroz.", "Los incas vivían en los Andes."])
    assert vecs.shape == (2, dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    with SearchEngine.open(tmp_path / "fresh", model=str(out)) as engine:
        engine.ingest([CORPUS / "cocina"])
        assert engine.counts()["embeddings"] > 0


def test_adapt_layers_must_be_fewer_than_the_teacher_and_at_least_one(
    index: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _one_line_error(
        run("adapt", "--index", index, "--out", out, "--layers", 2, "--max-steps", 1),
        "--layers must be between 1 and 1",
        "has 2 layers",
    )
    assert not (out / "modules.json").exists()
    zero = run("adapt", "--index", index, "--out", out, "--layers", 0)
    assert zero.exit_code == 2 and "--layers" in zero.output and "Traceback" not in zero.output
    from beto_search.errors import InputError

    with (
        SearchEngine.open(index, create=False) as engine,
        pytest.raises(InputError, match="least 1"),
    ):
        engine.adapt(out, layers=0, max_steps=1)
