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


@pytest.fixture(scope="session")
def trained_run(small_synthetic_corpus, tmp_path_factory) -> Path:
    """A tiny model trained 1 epoch on fold 0 (1 s crops), with its kNN stage fitted."""
    from emoknn.config import make_config
    from emoknn.corpora import label_names, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.inference import fit_run_knn
    from emoknn.train import train_fold

    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    run = tmp_path_factory.mktemp("trained_run")
    config = make_config("tiny", max_epochs=1, max_seconds=1.0, batch_size=8, progress_bar=False)
    info = {
        "corpus": str(small_synthetic_corpus),
        "kind": "synthetic",
        "scheme": "speaker",
        "fold": fold.name,
        "test_speaker": fold.test_speaker,
        "val_speaker": fold.val_speaker,
    }
    train_fold(config, fold.train, fold.val, label_names(utterances), run, extra_info=info)
    fit_run_knn(run, fold.train, fold.val, config.max_seconds)
    return run


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    """The real openai/whisper-base in Hugging Face format (built by shared/tools/whisper-base).

    Its folder comes from EMOKNN_WHISPER_BASE (default ~/.cache/emoknn-dev/whisper-base); tests
    that use it are marked `pretrained` and skip when it is absent.
    """
    import os

    folder = Path(
        os.environ.get("EMOKNN_WHISPER_BASE", "~/.cache/emoknn-dev/whisper-base")
    ).expanduser()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        pytest.skip(f"no whisper-base at {folder} (build it with shared/tools/whisper-base)")
    return folder


# Real corpora (never in the repository): EMOKNN_EMODB, EMOKNN_RAVDESS, EMOKNN_TESS name laid-out
# copies (e.g. ../shared/corpora/emodb, or what shared/tools/real-corpus writes). Tests that read
# them are marked `real`, left out of the default run, and skip when the variable is unset.
REAL_CORPUS_VARIABLES = {
    "emodb": "EMOKNN_EMODB",
    "ravdess": "EMOKNN_RAVDESS",
    "tess": "EMOKNN_TESS",
}


def real_corpus_dir(name: str) -> Path:
    """The folder of a real corpus copy, or skip the calling test when none is named."""
    import os

    variable = REAL_CORPUS_VARIABLES[name]
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set (the folder of a laid-out {name} copy)")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        pytest.skip(f"{variable}={folder} is not a folder")
    return folder


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    return real_corpus_dir("emodb")


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    return real_corpus_dir("ravdess")


@pytest.fixture(scope="session")
def tess_dir() -> Path:
    return real_corpus_dir("tess")
