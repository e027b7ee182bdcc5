"""The quality layer's import paths: every name the modules evaluation.py, tuning.py, adapt.py
and training.py had stays importable there, and the CLI's options load no training code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import ROOT

OLD_NAMES = {
    "beto_search.quality.evaluation": "MEASURES EvalSet EvalReport Query evaluate load_eval_set "
    "read_qrels read_queries score_run run_evaluation write_runs write_per_query per_query_rows "
    "missing_documents modes_for MAX_WARNINGS_SHOWN BEIR_QRELS_HEADER",
    "beto_search.quality.tuning": "AUTOTUNE_MIN_CHUNKS MIN_QUERIES PSEUDO_QUERIES PSEUDO_SEED "
    "SAMPLE_PER_QUERY SAMPLE_MIN DEPTH TOLERANCE STYLES GROUP_MAX STRONG_CAP WEAK_SHRINK grid "
    "pseudo_grid choose_pseudo TuneResult harden keywords gist pseudo_queries PseudoSet cloze_set "
    "cloze_candidates candidate_lists measure tune maybe_autotune explain describe",
    "beto_search.quality.adapt": "METHODS DEFAULT_METHOD METHOD_NAMES CHECKPOINT LOG_NAME "
    "CHECK_CORPUS_MAX ADAPT_CHUNKS_MAX CROPS_PER_CHUNK WorseModelError TrainOptions TrainReport "
    "load_start_model features embed RetrievalCheck cloze_check doc_distinct_batches "
    "save_checkpoint load_checkpoint restore BatchFn LoopResult run_training write_model "
    "model_card finish check_out index_chunks ChunkSample sample_index_chunks train_options "
    "check_layers kept_layers make_student distil distillation_card adapt _examples",
    "beto_search.quality.training": "MINE_DEPTH MINE_PICK NEAR_DUPLICATE Example near_duplicate "
    "read_pairs qrels_examples mine_negative train",
    "beto_search.quality.pseudoqueries": "PseudoQuery GroupQuery sentence_spans sentences "
    "cloze_pairs make_pseudo_queries crop_pair group_queries",
}


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_old_names_import_from_their_old_paths(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in OLD_NAMES[module].split() if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"


def test_the_entry_points_the_engines_call_are_functions() -> None:
    from beto_search.quality.adapt import adapt
    from beto_search.quality.training import train
    from beto_search.quality.tuning import describe, maybe_autotune, tune

    assert all(callable(f) for f in (adapt, train, tune, maybe_autotune, describe))
    assert adapt.__module__ == "beto_search.quality.training.adapt"


def test_the_cli_options_load_neither_torch_nor_the_training_loop() -> None:
    code = (
        "import sys\n"
        "from beto_search.quality.training.options import ADAPT_CHUNKS_MAX, DEFAULT_METHOD, METHODS\n"
        "from beto_search.quality.adapt import WorseModelError\n"
        "heavy = [m for m in ('torch', 'beto_search.quality.training.loop') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
