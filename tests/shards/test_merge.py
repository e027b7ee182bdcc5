"""The shard-caller seam (``beto_search.shards.merge`` over a ``ShardCaller``), with a fake caller
in front of real local shards: the gathered lexical scores are one index's bm25; a shard that
fails is left out of the global statistics and of the merge (the scores are those of an index of
the live shards); a shard that fails in a later dfs round keeps its earlier answer and is asked
no more; the rounds stop; the caller sees only shard-local chunk ids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beto_search import SearchEngine
from beto_search.shards import ShardedEngine, shard_of
from beto_search.shards.callers import CandidateRequest, LocalShardCaller, ShardAnswer
from beto_search.shards.merge import gather, search_merged
from tests.encoders import HashEncoder

SHARDS = 3
WORDS = [
    "montaña",
    "nevada",
    "valle",
    "bosque",
    "puente",
    "molino",
    "camino",
    "pueblo",
    "iglesia",
    "castillo",
]


def records() -> list[dict[str, Any]]:
    """Documents whose lengths and term counts vary, so that each shard's own bm25 orders its
    rows differently from the global one (and a cut list must be asked again)."""
    out = []
    for i in range(90):
        rio = "río " * (1 + i % 4)
        extra = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(i % 11))
        out.append({"id": f"doc-{i:03d}", "text": f"{rio}{extra} mar" if i % 3 else extra})
    return out


def build(folder: Path, docs: list[dict[str, Any]], shards: int | None) -> Path:
    with SearchEngine.open(folder, HashEncoder(), index_type="flat", shards=shards) as e:
        assert e.add(docs).added == len(docs)
    return folder


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge")
    docs = records()
    live = [d for d in docs if shard_of(d["id"], SHARDS) != 1]
    return {
        "one": build(root / "one", docs, None),
        "sharded": build(root / "sharded", docs, SHARDS),
        "single": build(root / "single", docs, 1),
        "live": build(root / "live", live, None),  # the documents of shards 0 and 2 only
    }


class FakeCaller:
    """A ``ShardCaller`` over real local shards that records each round's requests and makes the
    shards named in ``fail`` (round number -> shards) fail in that round."""

    def __init__(self, engine: ShardedEngine, fail: dict[int, set[int]] | None = None) -> None:
        self.inner = LocalShardCaller(engine.shards)
        self.fail = fail or {}
        self.rounds: list[dict[int, CandidateRequest]] = []
        self.seen_ids: list[int] = []

    @property
    def count(self) -> int:
        return self.inner.count

    def candidates(
        self, requests: Mapping[int, CandidateRequest]
    ) -> tuple[dict[int, ShardAnswer], list[int]]:
        down = self.fail.get(len(self.rounds), set()) & set(requests)
        self.rounds.append(dict(requests))
        answers, _ = self.inner.candidates({i: r for i, r in requests.items() if i not in down})
        for a in answers.values():
            self.seen_ids += list(a.candidates.rows)
        return answers, sorted(down)

    def dense_scores(
        self, shard: int, ids: list[int], query_vector: np.ndarray
    ) -> dict[int, float] | None:
        return self.inner.dense_scores(shard, ids, query_vector)

    def locate(self, shard: int, hits: list[Any], known: dict[str, Any]) -> bool:
        return self.inner.locate(shard, hits, known)


def lexical_by_doc(engine: Any, query: str, depth: int) -> dict[str, float]:
    """One engine's lexical candidates (``candidates``, the public tuning call) by document."""
    _, lexical, doc_of = engine.candidates([query], depth)
    return {doc_of[c]: v for c, v in lexical[0].items()}


def gathered_by_doc(caller: FakeCaller, query: str, depth: int) -> tuple[dict[str, float], Any]:
    from beto_search.analyzer import SpanishAnalyzer  # the engines' analyzer

    terms = list(dict.fromkeys(SpanishAnalyzer().terms(query)))
    qvec = np.asarray(HashEncoder().encode_queries([query]), dtype=np.float32)
    got = gather(caller, CandidateRequest(query, "hybrid", depth, qvec), depth, terms)
    rows = got.candidates.rows
    return {rows[g].doc_id: v for g, v in got.candidates.lexical.items()}, got


@pytest.mark.parametrize("query", ["río mar", "río montaña nevada", "castillo puente"])
def test_gather_equals_one_index_bm25(indexes: dict[str, Path], query: str) -> None:
    with (
        SearchEngine.open(indexes["one"], HashEncoder(), create=False) as one,
        SearchEngine.open(indexes["sharded"], HashEncoder(), create=False) as sharded,
    ):
        assert isinstance(sharded, ShardedEngine)
        caller = FakeCaller(sharded)
        for depth in (3, 10, 200):
            want = lexical_by_doc(one, query, depth)
            got, gathered = gathered_by_doc(caller, query, depth)
            assert gathered.failed == []
            assert got.keys() == want.keys()
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        # the statistics are asked once per gather, with the first round only
        firsts = [r for r in caller.rounds if all(q.with_stats for q in r.values())]
        assert len(firsts) == 3 and all(len(r) == SHARDS for r in firsts)
        # the shards answer under their own chunk ids; ids are global (local * N + shard) only
        # after the merge
        rows = gathered.candidates.rows
        assert all(shard_of(rows[g].doc_id, SHARDS) == g % SHARDS for g in rows)
        assert max(caller.seen_ids) < len(records())


def test_one_shard_keeps_fts5_scores_without_a_statistics_round(
    indexes: dict[str, Path],
) -> None:
    with (
        SearchEngine.open(indexes["one"], HashEncoder(), create=False) as one,
        SearchEngine.open(indexes["single"], HashEncoder(), create=False) as single,
    ):
        assert isinstance(single, ShardedEngine) and single.count == 1
        caller = FakeCaller(single)
        for query in ("río mar", "castillo puente"):
            got, _ = gathered_by_doc(caller, query, 5)
            assert got == lexical_by_doc(one, query, 5)  # exactly: FTS5's own bm25
        assert all(not r.with_stats and not r.terms for q in caller.rounds for r in q.values())


def test_a_failed_shard_is_left_out_of_the_statistics_and_the_merge(
    indexes: dict[str, Path],
) -> None:
    query = "río mar montaña"
    with (
        SearchEngine.open(indexes["live"], HashEncoder(), create=False) as live,
        SearchEngine.open(indexes["sharded"], HashEncoder(), create=False) as sharded,
    ):
        assert isinstance(sharded, ShardedEngine)
        for depth in (3, 200):
            caller = FakeCaller(sharded, fail={0: {1}})
            got, gathered = gathered_by_doc(caller, query, depth)
            assert gathered.failed == [1]
            assert all(shard_of(d, SHARDS) != 1 for d in got)
            assert {g % SHARDS for g in gathered.candidates.rows} <= {0, 2}
            # the scores of an index of the live shards' documents, not of all the shards'
            want = lexical_by_doc(live, query, depth)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
            assert all(1 not in r for r in caller.rounds[1:])  # never asked again


def test_rounds_stop_and_a_shard_failing_later_keeps_its_first_answer(
    indexes: dict[str, Path],
) -> None:
    query, depth = "río mar", 3
    with (
        SearchEngine.open(indexes["one"], HashEncoder(), create=False) as one,
        SearchEngine.open(indexes["sharded"], HashEncoder(), create=False) as sharded,
    ):
        assert isinstance(sharded, ShardedEngine)
        exact = lexical_by_doc(one, query, 1000)
        whole = FakeCaller(sharded)
        want, _ = gathered_by_doc(whole, query, depth)
        assert 2 <= len(whole.rounds) < 10  # a cut list was asked again, and the rounds stop
        again = whole.rounds[1]
        assert all(r.depth == 4 * depth and not r.with_stats for r in again.values())

        def first_answer(i: int) -> set[str]:
            c = whole.inner.candidates({i: whole.rounds[0][i]})[0][i].candidates
            return {c.rows[cid].doc_id for cid in c.lexical}

        # a shard asked again whose first answer holds one of the top documents fails then
        victim, top = next((i, t) for i in sorted(again) if (t := first_answer(i) & want.keys()))
        caller = FakeCaller(sharded, fail={1: {victim}})
        got, gathered = gathered_by_doc(caller, query, depth)
        assert gathered.failed == [victim]
        assert all(victim not in r for r in caller.rounds[2:])  # asked no more
        assert top <= got.keys()  # its first answer is in the merge
        # and its statistics still count (it answered the first round): one index's scores
        assert got == pytest.approx({d: exact[d] for d in got}, rel=1e-9, abs=1e-12)
        assert len(got) == depth


def test_search_merged_names_the_failed_shard_and_keeps_the_warnings(
    indexes: dict[str, Path],
) -> None:
    with SearchEngine.open(indexes["sharded"], HashEncoder(), create=False) as sharded:
        assert isinstance(sharded, ShardedEngine)
        whole = sharded.search("río", k=5, where={"tema": "x"})
        assert whole.warnings and "tema" in whole.warnings[0]
        qvec = np.asarray(HashEncoder().encode_queries(["río"]), dtype=np.float32)
        request = CandidateRequest("río", "hybrid", 0, qvec, {"tema": "x"})
        out = search_merged(
            FakeCaller(sharded, fail={0: {2}}),
            request,
            5,
            sharded.fusion_config(),
            sharded.analyzer,
        )
        assert out.failed == [2] and out.hits == [] and out.warnings == whole.warnings
        out = search_merged(
            FakeCaller(sharded, fail={0: {2}}),
            CandidateRequest("río", "hybrid", 0, qvec),
            50,
            sharded.fusion_config(),
            sharded.analyzer,
        )
        assert out.failed == [2] and len(out.hits) == 50
        assert all(shard_of(h.doc_id, SHARDS) != 2 for h in out.hits)
