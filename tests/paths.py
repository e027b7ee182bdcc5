"""The repository's folders that tests read: one definition, whatever folder a test sits in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CORPUS = ROOT / "corpora" / "es"
DEV = ROOT / "corpora" / "es-dev"
QA = ROOT / "corpora" / "es-qa"
