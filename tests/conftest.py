from __future__ import annotations

from pathlib import Path

import pytest

from emoknn.corpora import generate_synthetic_corpus


@pytest.fixture(scope="session")
def small_synthetic_corpus(tmp_path_factory) -> Path:
    """3 sessions × 2 speakers × 4 classes × 3 clips of 0.5–1.0 s (72 clips), generated once."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_corpus(
        root, seed=0, num_sessions=3, utterances_per_class=3, min_seconds=0.5, max_seconds=1.0
    )
    return root


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep caches (the simulated RIR bank) out of the user's home during tests."""
    import os

    previous = os.environ.get("EMOKNN_CACHE")
    os.environ["EMOKNN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("EMOKNN_CACHE", None)
    else:
        os.environ["EMOKNN_CACHE"] = previous
