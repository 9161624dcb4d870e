"""Options that more than one command takes, each declared once (type, flag, help).

A command names the alias as its parameter's type and gives the default beside it, e.g.
`freeze_encoder: FreezeEncoder = None`. Options only one command takes are declared with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# ── Corpus, folds, augmentation (train, crossval, corpus summarize, augment preview) ─────────
CorpusOption = Annotated[Path, typer.Option("--corpus", help="Corpus folder or manifest .csv")]
Kind = Annotated[
    str, typer.Option("--kind", help="Corpus kind (see `emoknn corpus list`), or auto")
]
Scheme = Annotated[
    str,
    typer.Option(
        "--scheme",
        help="Folds: speaker (LOSO), session, official (the corpus's own train / validation "
        "/ test: MSP-Podcast, MELD, ESD), or emobox (EmoBox's 6 RAVDESS folds of 4 actors)",
    ),
]
LabelMap = Annotated[
    str,
    typer.Option(
        "--label-map",
        help="default (the corpus's standard classes), four (angry, happy, neutral, sad), or a "
        'JSON file {"class": "new class" or null}',
    ),
]
RirDir = Annotated[
    Path | None,
    typer.Option("--rir-dir", help="Folder of room impulse responses for reverb"),
]

# ── Training settings (train, crossval); None keeps the preset's value ──────────────────────────
Preset = Annotated[
    str,
    typer.Option("--preset", help="paper (wav2vec2-base), tiny (CPU demo), frozen (head only) or "
                 "finetune-cpu (top layers on cached frames)"),
]
Encoder = Annotated[str | None, typer.Option("--encoder", help="HF hub name or local dir")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Maximum epochs")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Originals per batch")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Learning rate")]
MaxSeconds = Annotated[float | None, typer.Option("--max-seconds", help="Crop length in seconds")]
FreezeEncoder = Annotated[
    bool | None,
    typer.Option(
        "--freeze-encoder/--no-freeze-encoder",
        help="Train only the head, on cached encoder features (frozen preset: on)",
    ),
]
FeatureCache = Annotated[
    Path | None,
    typer.Option(
        "--feature-cache", help="Feature cache folder (default: emoknn-features beside --out)"
    ),
]
CacheViews = Annotated[
    int | None,
    typer.Option("--cache-views", help="Augmented views cached per utterance (frozen encoder)"),
]
CachePrecision = Annotated[
    str | None,
    typer.Option(
        "--cache-precision",
        help="Feature cache fill: fp32, bf16-views (views in bfloat16, originals fp32) or bf16 "
        "(both; needs a CPU or GPU with bfloat16)",
    ),
]
TuneLayers = Annotated[
    int | None,
    typer.Option("--tune-layers", help="Partial fine-tuning: train the top N encoder layers on "
                 "cached frames of the frozen layers beneath (finetune-cpu preset: 2)"),
]  # fmt: skip
CutLayer = Annotated[
    int | None,
    typer.Option("--cut-layer", help="Partial fine-tuning: drop the layers above this one (0 = "
                 "per fold, the layer a probe scores best on the validation speaker)"),
]  # fmt: skip
TuneLr = Annotated[
    float | None,
    typer.Option("--tune-lr", help="Partial fine-tuning: learning rate of the tuned layers"),
]
FrameCacheGb = Annotated[
    float | None,
    typer.Option("--frame-cache-gb", help="Partial fine-tuning: refuse a frame-cache fill that "
                 "would write more than this many GB"),
]  # fmt: skip
Task = Annotated[
    str | None,
    typer.Option("--task", help="categorical (classes), dimensional (arousal, valence, "
                 "dominance) or both"),
]  # fmt: skip
RegressionLoss = Annotated[
    str | None, typer.Option("--regression-loss", help="ccc (1 − CCC, default) or mse")
]
SpeakerNorm = Annotated[
    bool,
    typer.Option(
        "--speaker-norm",
        help="Standardise each speaker's features with its own clips, the test speaker's "
        "unlabelled clips included (transductive; frozen encoder only)",
    ),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed")]
Workers = Annotated[int | None, typer.Option("--workers", help="Data loader worker processes")]
Accelerator = Annotated[str | None, typer.Option("--accelerator", help="auto, cpu, gpu")]
Devices = Annotated[int | None, typer.Option("--devices", help="Devices per node (DDP when > 1)")]
TrainPrecision = Annotated[
    str | None, typer.Option("--precision", help="auto, 32-true, bf16-mixed, 16-mixed")
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars")]

# ── The kNN stage (train, crossval, datastore build, adapt) ─────────────────────────────────────
Criterion = Annotated[str, typer.Option("--criterion", help="Tune k, α, T for ua or wa")]
KnnTuning = Annotated[
    str | None,
    typer.Option(
        "--knn-tuning",
        help="How k, α, T (and the probability temperatures) are chosen: speakers = over inner "
        "folds of the training speakers, α = 0 allowed (frozen encoder; its default), or "
        "validation = on the validation speaker alone, α in (0, 1) (the paper's)",
    ),
]

# ── Sharing a model (adapt, push)
Licence = Annotated[
    str | None,
    typer.Option("--licence", help="Licence for the model card it writes (e.g. cc-by-4.0)"),
]

# ── Using a model (predict, serve, adapt) ───────────────────────────────────────────────────────
RecognizerModel = Annotated[
    Path,
    typer.Option(
        "--model",
        help="A run or adapted model folder, an `emoknn export` folder, a .ckpt file, a Hugging "
        "Face audio classifier folder, or a Hub id owner/name",
    ),
]
Knn = Annotated[bool, typer.Option("--knn/--no-knn", help="Interpolate with the kNN model")]
Int8 = Annotated[
    bool, typer.Option("--int8/--no-int8", help="ONNX export folders: use the int8 model")
]
InferencePrecision = Annotated[
    str,
    typer.Option(
        "--precision", help="fp32, or bf16: faster where the hardware has bf16 (docs: prediction)"
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: best)")]
ClipBatch = Annotated[int, typer.Option("--batch-size", help="Clips per forward pass")]
