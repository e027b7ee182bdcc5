"""beto-search eval: query/qrels parsing (BEIR and TREC), metrics via ir_measures, the CLI."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from beto_search.cli import cli
from beto_search.errors import InputError
from beto_search.quality.evaluation import (
    MEASURES,
    EvalSet,
    Query,
    evaluate,
    load_eval_set,
    read_qrels,
    read_queries,
    score_run,
)
from tests.paths import DEV

DEV_QUERIES = DEV / "queries.jsonl"
DEV_QRELS = DEV / "qrels" / "dev.tsv"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def dcg(gains: list[float]) -> float:
    """Linear-gain DCG, rank r discounted by log2(r + 1) (trec_eval's nDCG)."""
    return sum(g / math.log2(r + 1) for r, g in enumerate(gains, start=1))


# ----- metrics on a toy case computed by hand ------------------------------------------------
TOY_QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0},  # graded; d3 judged non-relevant
    "q2": {"d4": 1},
    "q3": {"d5": 2, "d6": 2},
}
TOY_RUN = {
    "q1": ["d3", "d2", "x", "d1"],
    "q2": [f"n{i}" for i in range(1, 12)] + ["d4"],  # the only relevant one at rank 12
    "q3": [],  # nothing retrieved: must count as 0, not be dropped
}


def toy_set() -> EvalSet:
    return EvalSet({q: Query(q, f"texto {q}") for q in TOY_QRELS}, TOY_QRELS)


def test_metrics_match_hand_computed_values() -> None:
    run = {q: [(d, 1.0) for d in docs] for q, docs in TOY_RUN.items()}  # all scores tied
    means, per_query = score_run(toy_set(), run)

    # q1: d3 (grade 0), d2 (grade 1) at rank 2, x, d1 (grade 2) at rank 4
    ndcg_q1 = dcg([0, 1, 0, 2]) / dcg([2, 1])
    expected = {
        "q1": {
            "ndcg@10": ndcg_q1,
            "mrr@10": 1 / 2,
            "recall@1": 0.0,
            "recall@10": 1.0,
            "recall@100": 1.0,
            "map@100": (1 / 2 + 2 / 4) / 2,
        },
        # q2: the relevant document at rank 12 is past every @10 cutoff
        "q2": {
            "ndcg@10": 0.0,
            "mrr@10": 0.0,
            "recall@1": 0.0,
            "recall@10": 0.0,
            "recall@100": 1.0,
            "map@100": 1 / 12,
        },
        "q3": {key: 0.0 for key in MEASURES},
    }
    assert ndcg_q1 == pytest.approx((1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3)))
    for q, values in expected.items():
        assert per_query[q] == pytest.approx(values), q
    for key in MEASURES:
        assert means[key] == pytest.approx(sum(expected[q][key] for q in expected) / 3), key
    assert means["ndcg@10"] == pytest.approx(ndcg_q1 / 3)
    assert means["map@100"] == pytest.approx((0.5 + 1 / 12) / 3)


def test_the_engines_order_wins_over_tied_scores() -> None:
    es = EvalSet({"q": Query("q", "t")}, {"q": {"a": 1}})
    # tied scores: the evaluator must not re-sort by document id
    means, _ = score_run(es, {"q": [("b", 0.5), ("a", 0.5)]})
    assert means["mrr@10"] == pytest.approx(0.5)
    means, _ = score_run(es, {"q": [("a", 0.5), ("b", 0.5)]})
    assert means["mrr@10"] == pytest.approx(1.0)


class FakeEngine:
    """Just what evaluate() uses: search() and store.snapshot()/hashes()."""

    def __init__(self, docs: set[str], ranking: list[str]) -> None:
        self.calls: list[dict] = []
        self.ranking = ranking

        @contextmanager
        def snapshot():
            yield

        self.store = SimpleNamespace(
            snapshot=snapshot, hashes=lambda ids: {i: "h" for i in ids if i in docs}
        )

    def search(
        self, text: str, k: int, mode: str, fusion: str, alpha: float, snippets: bool = True
    ) -> list:
        self.calls.append({"text": text, "k": k, "mode": mode, "fusion": fusion, "alpha": alpha})
        return [SimpleNamespace(doc_id=d, score=1.0 / r) for r, d in enumerate(self.ranking[:k], 1)]


def test_evaluate_runs_each_mode_and_passes_fusion_through() -> None:
    engine = FakeEngine({"d1", "d2", "d4"}, ["d1", "d2", "d4"])
    report = evaluate(engine, toy_set(), mode="all", k=5, fusion="convex", alpha=0.3)
    assert list(report.modes) == ["semantic", "lexical", "hybrid"]
    assert len(engine.calls) == 3 * 3
    assert {c["mode"] for c in engine.calls} == {"semantic", "lexical", "hybrid"}
    assert all(c["k"] == 5 and c["fusion"] == "convex" and c["alpha"] == 0.3 for c in engine.calls)
    assert report.runs["hybrid"]["q1"] == [("d1", 1.0), ("d2", 0.5), ("d4", 1 / 3)]
    # q3's relevant documents are not in the index; d3 (grade 0) does not count as missing
    assert report.missing == [{"query": "q3", "documents": ["d5", "d6"]}]
    assert any("k is 5" in w for w in report.warnings)
    q1 = report.per_query["lexical"]["q1"]
    assert q1["mrr@10"] == 1.0 and q1["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(InputError):
        evaluate(engine, toy_set(), mode="fuzzy")


# ----- parsing -------------------------------------------------------------------------------
def test_beir_and_trec_formats_parse_to_the_same_set(tmp_path: Path) -> None:
    beir_q = write(
        tmp_path / "queries.jsonl",
        '{"_id": "q1", "text": "¿Quién escribió Cien años de soledad?", "tipo": "pregunta"}\n'
        '{"_id": 2, "text": "ciclo de Calvin"}\n',
    )
    trec_q = write(
        tmp_path / "topics.txt", "q1\t¿Quién escribió Cien años de soledad?\n2\tciclo de Calvin\n"
    )
    beir_r = write(
        tmp_path / "qrels.tsv",
        "query-id\tcorpus-id\tscore\nq1\tliteratura/cien-anos-de-soledad.txt\t2\n"
        "q1\tfaq-12\t1\n2\tciencia/fotosintesis.txt\t2\n",
    )
    trec_r = write(
        tmp_path / "qrels.txt",  # extension says nothing; the content decides
        "q1 0 literatura/cien-anos-de-soledad.txt 2\nq1 0 faq-12   1\n"
        "2\t0\tciencia/fotosintesis.txt\t2\n",
    )
    warnings: list[str] = []
    bq, bfmt = read_queries(beir_q, warnings)
    tq, tfmt = read_queries(trec_q, warnings)
    assert (bfmt, tfmt) == ("beir", "trec")
    assert {q: v.text for q, v in bq.items()} == {q: v.text for q, v in tq.items()}
    assert bq["q1"].metadata == {"tipo": "pregunta"}
    br, brfmt = read_qrels(beir_r, warnings)
    tr, trfmt = read_qrels(trec_r, warnings)
    assert (brfmt, trfmt) == ("beir", "trec")
    assert (
        br
        == tr
        == {
            "q1": {"literatura/cien-anos-de-soledad.txt": 2, "faq-12": 1},
            "2": {"ciencia/fotosintesis.txt": 2},
        }
    )
    assert warnings == []


def test_the_dev_set_parses_cleanly() -> None:
    es = load_eval_set(DEV_QUERIES, DEV_QRELS)
    assert (es.query_format, es.qrels_format) == ("beir", "beir")
    assert len(es.queries) == 79 and es.warnings == []
    assert es.qrels["q1"] == {"literatura/cien-anos-de-soledad.txt": 2, "faq-12": 1}
    assert {g for judged in es.qrels.values() for g in judged.values()} == {1, 2}


def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    queries = write(
        tmp_path / "queries.jsonl",
        '{"_id": "q1", "text": "fotosíntesis"}\n'
        "\n"
        '{"_id": "q2", "text": \n'  # line 3: broken JSON
        '{"_id": "q3"}\n'  # line 4: no text
        '["q4", "lista"]\n'  # line 5: not an object
        '{"_id": "q5", "text": "volcanes"}\n',
    )
    qrels = write(
        tmp_path / "qrels.tsv",
        "query-id\tcorpus-id\tscore\n"
        "q1\tciencia/fotosintesis.txt\t2\n"
        "q1\tfaq-12\n"  # line 3: two columns
        "q5\tgeografia/volcanes.txt\talto\n"  # line 4: grade not a number
        "q5\tgeografia/andes.txt\t1\n"
        "q9\tfaq-1\t1\n",
    )  # a judged query with no text
    es = load_eval_set(queries, qrels)
    assert list(es.queries) == ["q1", "q5"]
    assert es.qrels["q5"] == {"geografia/andes.txt": 1}
    text = "\n".join(es.warnings)
    for where in (f"{queries}:3:", f"{queries}:4:", f"{queries}:5:", f"{qrels}:3:", f"{qrels}:4:"):
        assert where in text, where
    assert f"{queries}:2:" not in text and f"{qrels}:5:" not in text
    assert "q9" in text


def test_trec_bad_lines_and_files_with_nothing_valid(tmp_path: Path) -> None:
    warnings: list[str] = []
    qrels, _ = read_qrels(write(tmp_path / "q.qrels", "q1 0 d1 1\nq1 0 d2\nq2 0 d3 2\n"), warnings)
    assert qrels == {"q1": {"d1": 1}, "q2": {"d3": 2}}
    assert len(warnings) == 1 and f"{tmp_path / 'q.qrels'}:2:" in warnings[0]
    with pytest.raises(InputError, match="no valid query"):
        read_queries(write(tmp_path / "bad.jsonl", '{"_id": 1}\nnot json\n'), [])
    with pytest.raises(InputError, match="no valid judgement"):
        read_qrels(write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\n"), [])
    with pytest.raises(InputError, match="no query"):
        load_eval_set(write(tmp_path / "t.tsv", "a\tuno\n"), write(tmp_path / "r", "b 0 d 1\n"))


# ----- the command line on the real corpus index ---------------------------------------------
def run_cli(*args: str):
    return CliRunner().invoke(cli, ["eval", *args])


def test_eval_json_shape_on_the_dev_set(corpus_index: Path) -> None:
    result = run_cli(
        "--index",
        str(corpus_index),
        "--queries",
        str(DEV_QUERIES),
        "--qrels",
        str(DEV_QRELS),
        "-k",
        "10",
        "--json",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert {"modes", "queries", "missing", "warnings"} <= set(out)
    assert list(out["modes"]) == ["hybrid"]
    assert set(out["modes"]["hybrid"]) == {
        "ndcg@10",
        "mrr@10",
        "recall@1",
        "recall@10",
        "recall@100",
        "map@100",
    }
    assert all(0.0 <= v <= 1.0 for v in out["modes"]["hybrid"].values())
    assert out["queries"] == 79 and out["missing"] == []
    assert isinstance(out["warnings"], list)
    assert out["modes"]["hybrid"]["recall@10"] > 0  # lexical evidence finds something


def test_eval_mode_all_table_and_files(corpus_index: Path, tmp_path: Path) -> None:
    few = write(
        tmp_path / "few.jsonl",
        "".join(DEV_QUERIES.read_text(encoding="utf-8").splitlines(keepends=True)[:6]),
    )
    common = [
        "--index",
        str(corpus_index),
        "--queries",
        str(few),
        "--qrels",
        str(DEV_QRELS),
        "--mode",
        "all",
        "-k",
        "20",
    ]
    result = run_cli(
        *common, "--run", str(tmp_path / "run.trec"), "--per-query", str(tmp_path / "pq.tsv")
    )
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["metric", "semantic", "lexical", "hybrid-convex-0.3"]
    assert any(
        line.startswith("nDCG@10") and len(line.split()) == 4 for line in result.stdout.splitlines()
    )
    assert "judged queries are absent" in result.stderr
    for mode in ("semantic", "lexical", "hybrid"):
        rows = (tmp_path / f"run.{mode}.trec").read_text(encoding="utf-8").splitlines()
        qid, q0, _doc, rank, _score, tag = rows[0].split()
        assert (qid, q0, rank) == ("q1", "Q0", "1") and tag.startswith("beto-search-")
    tsv = (tmp_path / "pq.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0].split("\t")[:3] == ["mode", "query", "ndcg@10"] and "tipo" in tsv[0]
    assert len(tsv) == 1 + 3 * 6

    result = run_cli(
        *common,
        "--fusion",
        "convex",
        "--alpha",
        "0.3",
        "--json",
        "--per-query",
        str(tmp_path / "pq.jsonl"),
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out["modes"]) == ["semantic", "lexical", "hybrid"] and out["queries"] == 6
    assert (out["fusion"], out["alpha"]) == ("convex", 0.3)
    rows = [json.loads(line) for line in (tmp_path / "pq.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and rows[0]["metadata"] == {"tipo": "pregunta"}


def test_eval_reports_missing_documents(corpus_index: Path, tmp_path: Path) -> None:
    queries = write(tmp_path / "topics.tsv", "t1\tCien años de soledad\nt2\tfotosíntesis\n")
    qrels = write(
        tmp_path / "qrels.txt",
        "t1 0 literatura/cien-anos-de-soledad.txt 2\n"
        "t1 0 no-existe.txt 1\nt2 0 tampoco-existe 2\n"
        "t2 0 falta-juzgado 0\n",
    )
    result = run_cli(
        "--index",
        str(corpus_index),
        "--queries",
        str(queries),
        "--qrels",
        str(qrels),
        "--mode",
        "lexical",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["missing"] == [
        {"query": "t1", "documents": ["no-existe.txt"]},
        {"query": "t2", "documents": ["tampoco-existe"]},
    ]
    assert out["modes"]["lexical"]["recall@100"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    text = run_cli(
        "--index",
        str(corpus_index),
        "--queries",
        str(queries),
        "--qrels",
        str(qrels),
        "--mode",
        "lexical",
    )
    assert "missing from the index: 2" in text.stdout and "no-existe.txt" in text.stdout


def test_eval_missing_queries_file_is_one_line_error(corpus_index: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--index",
        str(corpus_index),
        "--queries",
        str(tmp_path / "nope.jsonl"),
        "--qrels",
        str(DEV_QRELS),
    )
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: The queries file {tmp_path / 'nope.jsonl'} does not exist."
    ]
    bad = write(tmp_path / "bad.jsonl", "no es json\n")
    result = run_cli("--index", str(corpus_index), "--queries", str(bad), "--qrels", str(DEV_QRELS))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
