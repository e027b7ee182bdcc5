"""``adapt`` reads a bounded, uniform sample of a large index's chunks (as ``tune`` does), so its
memory does not grow with the index."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from beto_search import BetoSearchError, SearchEngine
from beto_search.cli import cli
from beto_search.store import StoredChunk


class StreamedIndex:
    """An engine-shaped stand-in whose ``iter_chunks`` makes ``n`` chunks of ``size`` characters
    on the fly: the index itself costs no memory, so what is measured is what adapt keeps."""

    folder = Path("fake-index")

    def __init__(self, n: int, size: int, manifest: object) -> None:
        self.n, self.size, self.manifest = n, size, manifest

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[list[StoredChunk]]:
        for start in range(0, self.n, batch_size):
            yield [
                StoredChunk(
                    i,
                    f"d{i // 3}",
                    i % 3,
                    0,
                    self.size,
                    (f"{i} " * self.size)[: self.size],
                    "t",
                    "s",
                    {"categoria": "x" * 200},
                )
                for i in range(start, min(self.n, start + batch_size))
            ]


def test_adapt_chunk_loading_holds_at_most_the_cap() -> None:
    from beto_search.adapt import sample_index_chunks

    fake = StreamedIndex(n=30_000, size=2_000, manifest=object())  # ~60 MB of text streamed
    tracemalloc.start()
    try:
        sample = sample_index_chunks(fake, cap=200, seed=0)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sample.chunks) == 200 and sample.total == 30_000 and sample.last_id == 29_999
    # 200 kept chunks of ~2 KB plus one batch of 1024 in flight: a few MB, not 60
    assert peak < 12 * 2**20, peak
    ids = [c.chunk_id for c in sample.chunks]
    assert ids == sorted(ids) and len(set(ids)) == 200
    # uniform over the whole stream, not its head
    assert max(ids) > 20_000 and min(ids) < 10_000
    assert sum(i >= 15_000 for i in ids) in range(70, 131)
    # the same seed gives the same sample (a resumed run trains on the same examples)
    again = sample_index_chunks(fake, cap=200, seed=0)  # type: ignore[arg-type]
    assert [c.chunk_id for c in again.chunks] == ids
    other = sample_index_chunks(fake, cap=200, seed=1)  # type: ignore[arg-type]
    assert [c.chunk_id for c in other.chunks] != ids


def test_adapt_reports_the_sample_it_trained_on(corpus_index: Path, tmp_path: Path) -> None:
    with SearchEngine.open(corpus_index, create=False) as engine:
        total = engine.counts()["chunks"]
        assert total > 20
        report = engine.adapt(tmp_path / "m1", max_chunks=20, max_steps=1, batch_size=4, force=True)
        assert report.index_chunks == total and report.chunks_sampled == 20
        assert report.check_queries <= 20
        assert "a uniform sample of 20" in (tmp_path / "m1" / "README.md").read_text()
        full = engine.adapt(tmp_path / "m2", max_steps=1, batch_size=4, force=True)
        assert full.chunks_sampled == full.index_chunks == total
    with (
        SearchEngine.open(corpus_index, create=False) as engine,
        pytest.raises(BetoSearchError, match="max_chunks must be at least 1"),
    ):
        engine.adapt(tmp_path / "m3", max_chunks=0, max_steps=1)


def test_adapt_cli_max_chunks(corpus_index: Path, tmp_path: Path) -> None:
    args = ["adapt", "--index", str(corpus_index), "--out", str(tmp_path / "m"), "--max-steps"]
    res = CliRunner().invoke(cli, [*args, "1", "--batch-size", "4", "--max-chunks", "16", "-q"])
    assert res.exit_code == 0, res.output
    assert "read a uniform sample of 16 of the index's" in res.output
    res = CliRunner().invoke(
        cli, [*args, "1", "--batch-size", "4", "--max-chunks", "16", "--json", "--force", "-q"]
    )
    assert json.loads(res.stdout)["chunks_sampled"] == 16
