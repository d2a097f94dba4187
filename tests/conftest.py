"""Shared test fixtures: where the real-model corpus lives."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/corpus beside the checkout (the published models the conformance tests use).
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
MODELS = Path(__file__).resolve().parents[1] / "models"


def corpus_repos() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_dir()) if CORPUS.is_dir() else []


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}); it lives beside the "
                    "checkout as ../shared/corpus in CI")
    return CORPUS
