"""The `emoknn` command line: a thin layer over the public API.

Errors a user can fix (`EmoknnError`) print as one line on stderr and exit with status 1; usage
mistakes exit with 2 (typer). Every option is checked (`emoknn.checks`) before a command does any
work, and messages name the option as typed (`--workers`). Heavy imports (torch, transformers)
happen inside the commands that need them, so `emoknn --help` stays fast.

Console output never interprets rich markup or emoji codes: file and folder names, labels and
error messages are user text and are printed exactly as they are (`take[`, `[bold]x.wav`).
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from emoknn.checks import check_choice, check_int, check_number, check_port
from emoknn.errors import ConfigError, EmoknnError

app = typer.Typer(
    name="emoknn",
    help="Speech emotion recognition: SupCon fine-tuning + kNN inference (Interspeech 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
corpus_app = typer.Typer(
    help="Inspect corpora and generate the synthetic one.", no_args_is_help=True
)
app.add_typer(corpus_app, name="corpus")
datastore_app = typer.Typer(help="Build or extend a run's kNN datastore.", no_args_is_help=True)
app.add_typer(datastore_app, name="datastore")
augment_app = typer.Typer(help="Listen to the augmented views.", no_args_is_help=True)
app.add_typer(augment_app, name="augment")

# soft_wrap: long lines (paths) wrap in the terminal, never mid-path. markup and emoji off: what
# is printed is user text (names of files, folders, labels; messages quoting them); styles are
# given explicitly (`style=`, `Text.assemble`), never by [tags] inside strings.
console = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
error_console = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def _skipped(message: str) -> None:
    error_console.print(Text.assemble(("skipped:", "yellow"), " ", message))


# Training settings whose option is not `--` + the setting's name with dashes.
SETTING_OPTIONS = {
    "contrastive_weight": "--lambda",
    "max_epochs": "--epochs",
    "learning_rate": "--lr",
    "early_stopping_patience": "--early-stopping",
    "num_workers": "--workers",
    "progress_bar": "--progress",
}


def _option_of(setting: str) -> str:
    return SETTING_OPTIONS.get(setting, "--" + setting.replace("_", "-"))


def _train_config(preset: str, **overrides):
    """`make_config`, checked against this machine; errors name the command-line option."""
    from emoknn.train import PRESETS, check_hardware, make_config

    check_choice(preset, "--preset", PRESETS)
    try:
        config = make_config(preset, **overrides)
        check_hardware(config)
    except ConfigError as error:
        if error.setting is None:
            raise
        raise error.renamed(_option_of(error.setting)) from None
    return config


def _check_encoder(config) -> None:
    """A pretrained encoder is found (local folder, HF cache or reachable Hub) before any work."""
    from emoknn.hub import check_encoder_source

    check_encoder_source(config.encoder)


def _check_output_folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a folder", setting=option)


def _check_folder(path: Path | None, option: str) -> None:
    if path is not None and not path.is_dir():
        what = "not a folder" if path.exists() else "folder not found"
        raise ConfigError(f"{option} {path}: {what}", setting=option)


def _load_folds(corpus: Path, kind: str, scheme: str, folds: str | None):
    """The corpus's utterances and the selected folds, every option checked first."""
    from emoknn.corpora import CORPUS_KINDS, load_corpus
    from emoknn.folds import SCHEMES, select_folds, speaker_folds
    from emoknn.train import check_trainable

    check_choice(kind, "--kind", CORPUS_KINDS)
    check_choice(scheme, "--scheme", SCHEMES)
    utterances = load_corpus(corpus, kind)
    chosen = select_folds(speaker_folds(utterances, scheme), folds)
    labels = sorted({u.label for u in utterances})
    for fold in chosen:
        check_trainable(fold.train, labels)
    return utterances, chosen


@corpus_app.command("summarize")
def corpus_summarize(
    path: Annotated[Path, typer.Argument(help="Corpus folder or manifest .csv")],
    kind: Annotated[
        str, typer.Option(help="auto, iemocap, manifest, synthetic, ravdess, cremad, emodb")
    ] = "auto",
    skip_missing: Annotated[
        bool, typer.Option(help="Leave out utterances whose audio is missing")
    ] = False,
) -> None:
    """Counts per class, speaker and session, and the total duration."""
    from emoknn.audio import audio_duration
    from emoknn.corpora import (
        CORPUS_KINDS,
        HONESTY_NOTE,
        is_synthetic_corpus,
        label_names,
        load_corpus,
    )

    check_choice(kind, "--kind", CORPUS_KINDS)
    utterances = load_corpus(path, kind, skip_missing=skip_missing)
    labels = label_names(utterances)
    if path.is_dir() and is_synthetic_corpus(path):
        console.print(HONESTY_NOTE, style="yellow")

    per_label = Counter(u.label for u in utterances)
    per_speaker_label = Counter((u.speaker, u.label) for u in utterances)
    seconds_per_speaker: Counter[str] = Counter()
    for u in utterances:
        seconds_per_speaker[u.speaker] += audio_duration(u.path)
    total_seconds = sum(seconds_per_speaker.values())

    table = Table(title=f"{path} — {len(utterances)} utterances, {total_seconds / 3600:.2f} h")
    table.add_column("speaker")
    table.add_column("session")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    table.add_column("minutes", justify="right")
    session_of = {u.speaker: u.session or "-" for u in utterances}
    for speaker in sorted(session_of):
        counts = [per_speaker_label[(speaker, label)] for label in labels]
        table.add_row(
            speaker,
            session_of[speaker],
            *map(str, counts),
            str(sum(counts)),
            f"{seconds_per_speaker[speaker] / 60:.1f}",
        )
    table.add_section()
    table.add_row(
        "all",
        f"{len(set(session_of.values()) - {'-'})} sessions",
        *(str(per_label[label]) for label in labels),
        str(len(utterances)),
        f"{total_seconds / 60:.1f}",
        style="bold",
    )
    console.print(table)


@corpus_app.command("synth")
def corpus_synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the corpus into")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files")] = 0,
    sessions: Annotated[
        int, typer.Option(help="Sessions, each with a female and a male speaker")
    ] = 5,
    per_class: Annotated[int, typer.Option(help="Utterances per class and speaker")] = 10,
    min_seconds: Annotated[float, typer.Option(help="Shortest utterance")] = 1.0,
    max_seconds: Annotated[float, typer.Option(help="Longest utterance")] = 3.0,
) -> None:
    """Generate the synthetic corpus (NOT emotional speech: it exercises the pipeline offline)."""
    from emoknn.corpora import HONESTY_NOTE, generate_synthetic_corpus

    check_int(seed, "--seed", 0, 2**32 - 1)
    check_int(sessions, "--sessions", 1)
    check_int(per_class, "--per-class", 1)
    check_number(min_seconds, "--min-seconds", 0.1)
    check_number(max_seconds, "--max-seconds", min_seconds)
    # generate_synthetic_corpus refuses a non-empty folder: nothing is overwritten or left stale.
    utterances = generate_synthetic_corpus(
        out_dir, seed, sessions, per_class, min_seconds=min_seconds, max_seconds=max_seconds
    )
    console.print(HONESTY_NOTE, style="yellow")
    console.print(
        f"Wrote {len(utterances)} utterances of {len({u.speaker for u in utterances})} speakers "
        f"to {out_dir} (manifest: {out_dir / 'manifest.csv'})"
    )


@augment_app.command("preview")
def augment_preview(
    audio: Annotated[Path, typer.Argument(help="An audio file to augment")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for one wav per augmentation")],
    seed: Annotated[int, typer.Option(help="Random seed of the augmentations")] = 0,
    rir_dir: Annotated[
        Path | None, typer.Option(help="Folder of room impulse responses for reverb")
    ] = None,
) -> None:
    """Write the original and one file per augmentation, to hear what the model will see."""
    import numpy as np
    import soundfile as sf

    from emoknn.audio import SAMPLE_RATE, load_audio
    from emoknn.augment import AUGMENTATION_NAMES, make_augmentation

    check_int(seed, "--seed", 0, 2**32 - 1)
    _check_folder(rir_dir, "--rir-dir")
    _check_output_folder(out_dir, "OUT_DIR")
    samples = load_audio(audio)
    augmentations = {name: make_augmentation(name, rir_dir=rir_dir)
                     for name in AUGMENTATION_NAMES[1:]}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    sf.write(out_dir / f"{audio.stem}.original.wav", samples, SAMPLE_RATE)
    for name, augmentation in augmentations.items():
        augmented = augmentation(samples, np.random.default_rng(seed))
        path = out_dir / f"{audio.stem}.{name}.wav"
        sf.write(path, augmented, SAMPLE_RATE)
        console.print(f"{name:>7}: {path}")


@app.command("train")
def train_command(
    corpus: Annotated[Path, typer.Option(help="Corpus folder or manifest .csv")],
    fold: Annotated[str, typer.Option(help="Fold index or test speaker (e.g. 0 or Ses01F)")] = "0",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<corpus>/...)")] = None,
    kind: Annotated[str, typer.Option(help="Corpus kind, or auto")] = "auto",
    scheme: Annotated[str, typer.Option(help="Folds: speaker (LOSO) or session")] = "speaker",
    preset: Annotated[
        str, typer.Option(help="paper (wav2vec2-base), tiny (CPU demo) or frozen (head only)")
    ] = "paper",
    encoder: Annotated[str | None, typer.Option(help="HF hub name or local dir")] = None,
    augment: Annotated[
        str | None, typer.Option(help="none|noise|volume|reverb|pitch|mixed")
    ] = None,
    rir_dir: Annotated[str | None, typer.Option(help="Folder of room impulse responses")] = None,
    contrastive_weight: Annotated[
        float | None, typer.Option("--lambda", help="λ: weight of SupCon (0 = CE only)")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="SupCon τ")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Originals per batch")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adamw")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Crop length in seconds")] = None,
    monitor: Annotated[str | None, typer.Option(help="val_loss, val_ua or val_wa")] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Stop after N bad epochs")] = None,
    layer_weighting: Annotated[bool | None, typer.Option(help="Weighted sum of layers")] = None,
    freeze_feature_encoder: Annotated[bool | None, typer.Option(help="Freeze the CNN")] = None,
    freeze_encoder: Annotated[
        bool | None,
        typer.Option(help="Train only the head, on cached encoder features (frozen preset: on)"),
    ] = None,
    feature_cache: Annotated[
        Path | None,
        typer.Option(help="Feature cache folder (default: emoknn-features beside --out)"),
    ] = None,
    cache_views: Annotated[
        int | None, typer.Option(help="Augmented views cached per utterance (frozen encoder)")
    ] = None,
    speaker_norm: Annotated[
        bool,
        typer.Option(
            help="Standardise each speaker's features with its own clips, test speaker's "
            "unlabelled clips included (transductive; frozen encoder only)"
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader worker processes")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu")] = None,
    devices: Annotated[int | None, typer.Option(help="Devices per node (DDP when > 1)")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (DDP)")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, 32-true, bf16-mixed, 16-mixed")
    ] = None,
    tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out")] = False,
    knn: Annotated[
        bool, typer.Option(help="Build the kNN datastore and tune k, α, T after")
    ] = True,
    criterion: Annotated[str, typer.Option(help="Tune k, α, T for ua or wa")] = "ua",
) -> None:
    """Fine-tune on one speaker-independent fold with CE + SupCon on augmented views."""
    from emoknn.corpora import label_names
    from emoknn.knn import CRITERIA
    from emoknn.train import train_fold

    check_choice(criterion, "--criterion", CRITERIA)
    _check_folder(Path(rir_dir) if rir_dir is not None else None, "--rir-dir")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs TensorBoard: pip install tensorboard")
    if out is not None:
        _check_output_folder(out, "--out")
    config = _train_config(
        preset, encoder=encoder, augment=augment, rir_dir=rir_dir,
        contrastive_weight=contrastive_weight, temperature=temperature, max_epochs=epochs,
        batch_size=batch_size, learning_rate=lr, optimizer=optimizer, max_seconds=max_seconds,
        monitor=monitor, early_stopping_patience=early_stopping, layer_weighting=layer_weighting,
        freeze_feature_encoder=freeze_feature_encoder, seed=seed, num_workers=workers,
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        tensorboard=tensorboard, progress_bar=progress, freeze_encoder=freeze_encoder,
        feature_cache=None if feature_cache is None else str(feature_cache),
        cache_views=cache_views, speaker_norm=speaker_norm or None,
    )  # fmt: skip
    utterances, chosen = _load_folds(corpus, kind, scheme, fold)
    if len(chosen) != 1:
        raise EmoknnError(f"--fold must name one fold, got {fold!r} ({len(chosen)} folds)")
    selected = chosen[0]
    if out is None:
        name = f"{preset}-{config.augment}-l{config.contrastive_weight:g}-s{config.seed}"
        out = Path("runs") / corpus.stem / name / selected.name
        _check_output_folder(out, "--out")
    _check_encoder(config)
    extra_info = {"corpus": str(corpus.resolve()), "kind": kind, "scheme": scheme,
                  "fold": selected.name, "test_speaker": selected.test_speaker,
                  "val_speaker": selected.val_speaker}  # fmt: skip
    labels = label_names(utterances)
    if config.freeze_encoder:
        from emoknn.frozen import train_frozen_fold

        result = train_frozen_fold(
            config, selected.train, selected.val, labels, out, resume=resume,
            extra_info=extra_info, log=console.print,
        )  # fmt: skip
    else:
        result = train_fold(config, selected.train, selected.val, labels, out, resume=resume,
                            extra_info=extra_info)  # fmt: skip
    if not result.is_global_zero:
        return
    files = (
        f"model: {result.best_checkpoint}"  # a frozen run's result is its model file
        if config.freeze_encoder
        else f"best: {result.best_checkpoint}\nlast: {result.last_checkpoint}"
    )
    console.print(
        f"Trained {selected.name} ({result.epochs} epochs). Best {config.monitor} = "
        f"{result.best_score if result.best_score is not None else float('nan'):.4f}\n{files}"
    )
    if knn:
        _build_datastore(out, selected.train, selected.val, config.max_seconds, criterion, "exact")


def _build_datastore(run_dir, train, val, max_seconds, criterion, index_type,
                     discard_added: bool = False) -> None:  # fmt: skip
    from emoknn.inference import fit_run_knn

    store, tuning = fit_run_knn(run_dir, train, val, max_seconds, criterion, index_type,
                                discard_added=discard_added)  # fmt: skip
    chosen, alone = tuning.interpolated, tuning.knn_only
    console.print(
        f"kNN datastore: {len(store)} utterances → {run_dir / 'datastore.npz'}\n"
        f"tuned on the validation speaker ({criterion.upper()}): k={chosen.k} α={chosen.alpha} "
        f"T={chosen.temperature:.3g} ({criterion.upper()} {chosen.score:.3f}); kNN alone: "
        f"k={alone.k} T={alone.temperature:.3g} ({criterion.upper()} {alone.score:.3f})"
    )


@datastore_app.command("build")
def datastore_build(
    run: Annotated[Path, typer.Argument(help="A training run folder")],
    corpus: Annotated[Path | None, typer.Option(help="Corpus, if moved since training")] = None,
    criterion: Annotated[str, typer.Option(help="Tune for ua or wa")] = "ua",
    index: Annotated[
        str, typer.Option(help="exact, or hnsw (approximate, large stores)")
    ] = "exact",
    discard_added: Annotated[
        bool, typer.Option(help="Drop utterances added by an earlier model (`datastore add`)")
    ] = False,
) -> None:
    """Embed the run's train + validation utterances and tune k, α, T on validation; utterances
    added with `datastore add` are kept."""
    from emoknn.knn import CRITERIA, INDEX_TYPES
    from emoknn.model_folder import fold_of_run, run_max_seconds

    check_choice(criterion, "--criterion", CRITERIA)
    check_choice(index, "--index", INDEX_TYPES)
    _check_folder(run, "RUN")

    fold = fold_of_run(run, corpus)
    _build_datastore(run, fold.train, fold.val, run_max_seconds(run), criterion, index,
                     discard_added)  # fmt: skip


@datastore_app.command("add")
def datastore_add(
    run: Annotated[Path, typer.Argument(help="A run folder with a datastore")],
    audio: Annotated[list[Path] | None, typer.Argument(help="Audio files, all of --label")] = None,
    label: Annotated[str | None, typer.Option(help="Label of the audio files given")] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV path,label,speaker to add")] = None,
) -> None:
    """Add your own labelled audio to a run's datastore, without retraining."""

    from dataclasses import replace

    from emoknn.corpora import Utterance, load_manifest
    from emoknn.inference import add_to_datastore

    _check_folder(run, "RUN")
    if manifest is not None and (audio or label):
        raise ConfigError("give either audio files with --label, or --manifest CSV, not both")
    if manifest is not None:
        utterances = [replace(u, id=f"added/{u.id}") for u in load_manifest(manifest)]
    elif audio and label is not None and label.strip():
        missing = [str(p) for p in audio if not p.is_file()]
        if missing:
            raise EmoknnError(f"{missing[0]}: file not found" + (
                f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))  # fmt: skip
        utterances = [Utterance(f"added/{p.resolve()}", p, label, "added") for p in audio]
    else:
        raise EmoknnError("give audio files with a non-empty --label, or --manifest CSV")
    store = add_to_datastore(run, utterances)
    console.print(f"Added {len(utterances)} utterances; the datastore now holds {len(store)}.")


def _print_summary(summary: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in ("variant", "folds", "WA %", "UA %"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in summary:
        table.add_row(
            row["variant"],
            str(row["folds"]),
            f"{100 * row['wa_mean']:.2f} ± {100 * row['wa_std']:.2f}",
            f"{100 * row['ua_mean']:.2f} ± {100 * row['ua_std']:.2f}",
        )
    console.print(table)


def _print_comparisons(comparisons: list[dict]) -> None:
    """One sentence per paired comparison (how they are tested: emoknn.stats.METHOD_NOTE)."""
    from emoknn.stats import METHOD_NOTE

    if comparisons:
        console.print("Paired comparisons over folds:")
        for comparison in comparisons:
            console.print(f"  - {comparison['sentence']}", highlight=False)
        console.print(METHOD_NOTE, style="dim")


def _run_crossval(corpus: Path, kind: str, scheme: str, folds: str | None, tables: str,
                  out: Path, config, criterion: str = "ua") -> Path:  # fmt: skip
    """Cross-validate, print each finished fold and the summary, write the report."""
    import json

    from emoknn.corpora import HONESTY_NOTE, is_synthetic_corpus, label_names
    from emoknn.experiments import crossval, trainings_for
    from emoknn.knn import CRITERIA
    from emoknn.report import write_report

    check_choice(criterion, "--criterion", CRITERIA)
    table_names = [t.strip() for t in tables.split(",") if t.strip()]
    if not table_names:
        raise ConfigError(
            f"--tables must name one or more of main, augment, lambda; got {tables!r}"
        )
    try:
        trainings_for(table_names)
    except ConfigError as error:
        raise ConfigError(f"--tables {tables!r}: {error}") from None
    _check_output_folder(out, "--out")
    utterances, chosen = _load_folds(corpus, kind, scheme, folds)
    _check_encoder(config)
    synthetic = corpus.is_dir() and is_synthetic_corpus(corpus)
    if synthetic:
        console.print(HONESTY_NOTE, style="yellow")
    meta = {
        "corpus": str(corpus.resolve()), "kind": kind,
        "corpus_name": corpus.resolve().name + (" (synthetic)" if synthetic else ""),
        "scheme": scheme, "synthetic": synthetic, "num_utterances": len(utterances),
        "labels": label_names(utterances), "preset": config.preset_name,
        "encoder": config.encoder, "speaker_norm": config.speaker_norm,
    }  # fmt: skip
    if not config.progress_bar:  # each fold prints its own line below; Lightning's add nothing
        import logging

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    console.print(
        f"Cross-validating {len(chosen)} fold(s) of {len(utterances)} utterances, tables: "
        f"{', '.join(table_names)} → {out}"
    )

    def done(result: dict) -> None:
        scores = result["scores"]
        with_knn = (f" (+kNN {100 * scores['interpolated']['ua']:.1f})"
                    if "interpolated" in scores else "")  # fmt: skip
        model_ua = 100 * scores["model"]["ua"]
        console.print(f"  {result['fold']} {result['label']:<8} UA {model_ua:.1f}{with_knn}")

    crossval(utterances, chosen, config, out, table_names, meta, on_fold_done=done,
             criterion=criterion, log=console.print)  # fmt: skip
    if int(os.environ.get("LOCAL_RANK", "0")) or int(os.environ.get("NODE_RANK", "0")):
        return out / "report.md"  # a DDP helper process: the first process reports
    report = write_report([out], out, meta)
    results = json.loads((out / "results.json").read_text())
    _print_summary(results["summary"], f"{meta['corpus_name']}: mean ± std over folds")
    _print_comparisons(results["comparisons"])
    if synthetic:
        console.print(HONESTY_NOTE, style="yellow")
    console.print(f"Report: {report}\nResults: {out / 'results.json'}")
    return report


@app.command("crossval")
def crossval_command(
    corpus: Annotated[Path, typer.Option(help="Corpus folder or manifest .csv")],
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it exists)")],
    folds: Annotated[str | None, typer.Option(help="Folds, e.g. 0,3-5 or Ses01F (all)")] = None,
    tables: Annotated[str, typer.Option(help="main, augment, lambda (comma list)")] = "main",
    kind: Annotated[str, typer.Option(help="Corpus kind, or auto")] = "auto",
    scheme: Annotated[str, typer.Option(help="Folds: speaker (LOSO) or session")] = "speaker",
    preset: Annotated[
        str, typer.Option(help="paper (wav2vec2-base), tiny (CPU demo) or frozen (head only)")
    ] = "paper",
    encoder: Annotated[str | None, typer.Option(help="HF hub name or local dir")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Originals per batch")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Crop length in seconds")] = None,
    freeze_encoder: Annotated[
        bool | None,
        typer.Option(help="Train only the head, on cached encoder features (frozen preset: on)"),
    ] = None,
    feature_cache: Annotated[
        Path | None,
        typer.Option(help="Feature cache folder (default: emoknn-features beside --out)"),
    ] = None,
    cache_views: Annotated[
        int | None, typer.Option(help="Augmented views cached per utterance (frozen encoder)")
    ] = None,
    speaker_norm: Annotated[
        bool,
        typer.Option(
            help="Standardise each speaker's features with its own clips, test speaker's "
            "unlabelled clips included (transductive; frozen encoder only)"
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader worker processes")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu")] = None,
    devices: Annotated[int | None, typer.Option(help="Devices per node (DDP when > 1)")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, 32-true, bf16-mixed")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = False,
    criterion: Annotated[str, typer.Option(help="Tune k, α, T for ua or wa")] = "ua",
) -> None:
    """Train and evaluate every fold (or --folds) for the paper's tables; write a report."""
    config = _train_config(
        preset, encoder=encoder, max_epochs=epochs, batch_size=batch_size, learning_rate=lr,
        max_seconds=max_seconds, seed=seed, num_workers=workers, accelerator=accelerator,
        devices=devices, precision=precision, progress_bar=progress,
        freeze_encoder=freeze_encoder, cache_views=cache_views,
        feature_cache=None if feature_cache is None else str(feature_cache),
        speaker_norm=speaker_norm or None,
    )  # fmt: skip
    _run_crossval(corpus, kind, scheme, folds, tables, out, config, criterion)


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Cross-validation output folders")],
    out: Annotated[Path | None, typer.Option(help="Where to write (default: the first)")] = None,
) -> None:
    """Merge cross-validation folders (e.g. folds run as separate jobs) into one report."""
    import json

    from emoknn.experiments import EXPERIMENT_FILE
    from emoknn.files import read_json_object
    from emoknn.report import write_report

    for run_dir in run_dirs:
        _check_folder(run_dir, "RUN_DIRS")
    if out is not None:
        _check_output_folder(out, "--out")
    experiment = run_dirs[0] / EXPERIMENT_FILE
    meta = read_json_object(experiment).get("corpus", {}) if experiment.is_file() else {}
    if not isinstance(meta, dict):
        raise EmoknnError(f"{experiment}: 'corpus' must be a JSON object")
    out = out or run_dirs[0]
    report = write_report(run_dirs, out, meta)
    results = json.loads((out / "results.json").read_text())
    _print_summary(
        results["summary"], f"{meta.get('corpus_name', 'merged')}: mean ± std over folds"
    )
    _print_comparisons(results["comparisons"])
    console.print(f"Report: {report}")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("emoknn-demo"),
    encoder: Annotated[
        str, typer.Option(help="Pretrained encoder (hub name or folder); tiny if it cannot load")
    ] = "openai/whisper-base",
    folds: Annotated[str | None, typer.Option(help="Folds to run, e.g. 0,5 (default: all)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per head")] = None,
) -> None:
    """The main job, on CPU: synthetic corpus → frozen encoder → CE vs CE+SCL, ± kNN, and a
    classical baseline on every fold → table, paired comparisons, report, a model to try."""
    import json
    import time

    from emoknn import demo
    from emoknn.corpora import generate_synthetic_corpus, is_synthetic_corpus

    start = time.perf_counter()
    _check_output_folder(out, "--out")
    _train_config("frozen", max_epochs=epochs)  # check the options before any work
    corpus = out / "corpus"
    if is_synthetic_corpus(corpus):
        console.print(f"Reusing the synthetic corpus in {corpus}")
    else:
        console.print(f"Generating the synthetic corpus in {corpus} ...")
        generate_synthetic_corpus(corpus, **demo.CORPUS_SETTINGS)
    choice = demo.choose_encoder(encoder)
    console.print(choice.line, highlight=False)
    config = _train_config("frozen", encoder=choice.encoder, max_epochs=epochs,
                           cache_views=demo.CACHE_VIEWS, progress_bar=False,
                           **demo.HEAD_SETTINGS)  # fmt: skip
    crossval_dir = out / "crossval"
    _run_crossval(corpus, "synthetic", "speaker", folds, "main", crossval_dir, config)
    results = json.loads((crossval_dir / "results.json").read_text())
    console.print(demo.verdict(results, choice.encoder), highlight=False)
    for line in demo.try_it(crossval_dir, results, corpus):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"Demo finished in {time.perf_counter() - start:.0f} s, encoder "
                  f"{choice.encoder}.", highlight=False)  # fmt: skip


@app.command("predict")
def predict_command(
    inputs: Annotated[list[Path], typer.Argument(help="Audio files or folders (recursive)")],
    model: Annotated[
        Path, typer.Option(help="Trained run folder, a .ckpt file, or an `emoknn export` folder")
    ],
    output_format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    knn: Annotated[bool, typer.Option(help="Interpolate with the kNN model")] = True,
    window: Annotated[float | None, typer.Option(help="Segment length (s) for long files")] = None,
    hop: Annotated[float | None, typer.Option(help="Hop between segments (s)")] = None,
    segmentation: Annotated[str, typer.Option(help="window or vad (energy)")] = "window",
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: best)")] = None,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16: faster where the hardware has bf16 (see README)")
    ] = "fp32",
    int8: Annotated[bool, typer.Option(help="ONNX export folders: use the int8 model")] = False,
) -> None:
    """Predict the emotion of your own recordings."""
    import csv
    import json
    import sys

    from rich.progress import Progress

    from emoknn.checks import check_device
    from emoknn.predict import (
        MAX_WINDOW_SECONDS,
        PRECISIONS,
        SEGMENTATIONS,
        find_audio_files,
        load_recognizer,
    )

    check_choice(output_format, "--format", ("table", "json", "csv"))
    check_choice(segmentation, "--segmentation", SEGMENTATIONS)
    check_int(batch_size, "--batch-size", 1)
    check_choice(precision, "--precision", PRECISIONS)
    check_device(device, "--device")
    if window is not None:
        check_number(window, "--window", 0.5, MAX_WINDOW_SECONDS)
    if hop is not None:
        check_number(hop, "--hop", 0.0, window, strict_minimum=True)
    files, problems = find_audio_files(inputs)
    for problem in problems:
        _skipped(problem)
    recognizer = load_recognizer(model, device, knn, precision, int8)
    predictions = []
    with Progress(console=error_console, transient=True, disable=len(files) < 20) as progress:
        task = progress.add_task("predicting", total=len(files))
        for result in recognizer.predict_files(files, batch_size, window, hop, segmentation):
            if isinstance(result, EmoknnError):
                _skipped(str(result))
            else:
                predictions.append(result)
            progress.advance(task)
    if not predictions:
        raise EmoknnError("nothing could be predicted")
    labels = recognizer.labels
    if output_format == "json":
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif output_format == "csv":
        writer = csv.writer(sys.stdout)
        # no_speech last: the columns earlier versions wrote keep their places.
        writer.writerow(["source", "start_s", "end_s", "label", *labels, "no_speech"])
        for p in predictions:
            writer.writerow([p.source, 0.0, p.duration_s, p.label,
                             *(f"{p.probabilities[label]:.4f}" for label in labels),
                             int(p.no_speech)])  # fmt: skip
            for segment in p.segments:
                writer.writerow([p.source, segment.start_s, segment.end_s, segment.label,
                                 *(f"{segment.probabilities[x]:.4f}" for x in labels),
                                 int(segment.no_speech)])  # fmt: skip
    else:
        # What was used, not what was asked: a checkpoint (or --no-knn) has no kNN stage.
        used_knn = recognizer.store is not None
        table = Table(title=f"emoknn — {'model + kNN' if used_knn else 'model only'} ({model})")
        table.add_column("file")
        table.add_column("seconds", justify="right")
        table.add_column("emotion", style="bold")
        for label in labels:
            table.add_column(label, justify="right")
        for p in predictions:
            # No speech: say so instead of an emotion; the model's probabilities stay visible.
            emotion = "no speech" if p.no_speech else p.label
            table.add_row(Path(p.source).name, f"{p.duration_s:.1f}", emotion,
                          *(f"{p.probabilities[label]:.2f}" for label in labels))  # fmt: skip
            for segment in p.segments:
                table.add_row(f"  {segment.start_s:.1f}–{segment.end_s:.1f} s", "",
                              "no speech" if segment.no_speech else segment.label,
                              *(f"{segment.probabilities[x]:.2f}" for x in labels))  # fmt: skip
        console.print(table)
        if any(p.no_speech for p in predictions):
            error_console.print(
                "no speech: no 30 ms frame is louder than -45 dBFS (silence, a constant signal or "
                "faint noise); the probabilities of such inputs say nothing about emotion",
                style="yellow",
            )


@app.command("convert")
def convert_command(
    run: Annotated[Path, typer.Argument(help="A run folder from an earlier emoknn version")],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            help="Unpickle the checkpoint if it needs it: runs any code the file holds; "
            "only for files you made yourself"
        ),
    ] = False,
) -> None:
    """Write model.safetensors + model.json for a run folder that has only checkpoints/best.ckpt."""
    from emoknn.model_folder import MODEL_FILE, convert_checkpoint, has_model

    if has_model(run):
        console.print(f"{run} already holds {MODEL_FILE}; nothing to convert.")
        return
    if trust_pickle:
        error_console.print(
            Text.assemble(
                ("warning:", "yellow"),
                " --trust-pickle unpickles the checkpoint, which runs any code it carries; use it "
                "only on files you trust (made by you).",
            )
        )
    meta = convert_checkpoint(run, trust_pickle=trust_pickle)
    console.print(
        f"Wrote {run / MODEL_FILE} and model.json ({len(meta.labels)} classes, crop "
        f"{meta.max_seconds:g} s); predict, serve and export now load that file."
    )


@app.command("import")
def import_command(
    model: Annotated[str, typer.Argument(help="Hugging Face audio classifier: folder or hub name")],
    out: Annotated[Path, typer.Argument(help="emoknn model folder to write")],
) -> None:
    """Turn a published Hugging Face audio classifier into an emoknn model folder."""
    from emoknn.hf_import import import_to_folder
    from emoknn.hub import resolve_model

    folder = import_to_folder(resolve_model(model), out)
    console.print(f"Wrote {folder}; predict, serve, export and adapt read it.", highlight=False)


@app.command("adapt")
def adapt_command(
    model: Annotated[
        str,
        typer.Option(
            help="emoknn model folder, or a Hugging Face audio classifier (folder or hub name)"
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="A folder per label (DIR/angry/*.wav …) or a CSV path,label[,speaker[,session]]"
        ),
    ],
    out: Annotated[Path, typer.Option(help="New model folder to write")],
    label_map: Annotated[
        str | None,
        typer.Option(
            help="Model labels → yours, e.g. hap=happy,exc=happy,fea= (empty: drop); "
            "unnamed labels keep their name if you have clips of it, else are dropped"
        ),
    ] = None,
    keep_datastore: Annotated[
        bool, typer.Option(help="Keep the model's own datastore beside your clips")
    ] = False,
    folds: Annotated[int, typer.Option(help="Most cross-validation folds")] = 10,
    criterion: Annotated[str, typer.Option(help="Tune k, α, T for ua or wa")] = "ua",
    licence: Annotated[
        str | None, typer.Option(help="Licence for the model card (e.g. cc-by-4.0)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stratified folds")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: best)")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass")] = 16,
) -> None:
    """Adapt a trained or published model to your own labelled clips with kNN (no training)."""
    from emoknn.adapt import INFERENCES, adapt_model, check_new_folder, load_source, parse_label_map

    mapping = parse_label_map(label_map) if label_map else None
    check_new_folder(out)
    source = load_source(model, "cpu")
    result = adapt_model(source, data, out, mapping, keep_datastore, folds, criterion, seed,
                         device, batch_size, licence)  # fmt: skip
    names = {"model": "model alone", "knn": "kNN alone", "interpolated": "model + kNN"}
    grouping = "speaker-grouped" if result.grouping == "speaker" else "stratified"
    table = Table(title=f"held-out clips, {result.folds} {grouping} folds")
    for column in ("inference", "UA % mean ± std", "WA % mean ± std"):
        table.add_column(column, justify="left" if column == "inference" else "right")
    for name in INFERENCES:
        row = result.summary[name]
        table.add_row(names[name], f"{100 * row['ua_mean']:.1f} ± {100 * row['ua_std']:.1f}",
                      f"{100 * row['wa_mean']:.1f} ± {100 * row['wa_std']:.1f}")  # fmt: skip
    console.print(table)
    for comparison in result.comparisons:
        console.print(comparison["sentence"], highlight=False)
    only_knn = sorted(set(result.labels) - set(result.model_labels))
    if only_knn:
        console.print(f"served by the kNN alone (the model does not know them): "
                      f"{', '.join(only_knn)}", highlight=False)  # fmt: skip
    chosen = result.tuning.interpolated
    console.print(
        f"Wrote {result.out_dir} (labels {', '.join(result.labels)}; k = {chosen.k}, "
        f"α = {chosen.alpha}, T = {chosen.to_dict()['temperature']}). Try: emoknn predict "
        f"CLIP.wav --model {result.out_dir}",
        highlight=False,
    )


@app.command("push")
def push_command(
    run: Annotated[Path, typer.Argument(help="Model folder (with its README.md model card)")],
    repo_id: Annotated[str, typer.Argument(help="Hugging Face Hub repo id: owner/name")],
    private: Annotated[bool, typer.Option(help="Create the repo as private")] = False,
    licence: Annotated[
        str | None, typer.Option(help="Licence for a generated model card (e.g. cc-by-4.0)")
    ] = None,
) -> None:
    """Upload a model folder to the Hugging Face Hub (log in first: `hf auth login`)."""
    from emoknn.hub import push_model

    had_card = (run / "README.md").is_file()
    url = push_model(run, repo_id, private=private, licence=licence)
    if not had_card:
        console.print(f"Wrote the model card {run / 'README.md'} from the run's files.")
    console.print(f"Uploaded {run} to {url}; load it anywhere with --model {repo_id}",
                  highlight=False)  # fmt: skip


@app.command("serve")
def serve_command(
    model: Annotated[Path, typer.Option(help="Trained run folder or `emoknn export` folder")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    knn: Annotated[bool, typer.Option(help="Interpolate with the kNN model")] = True,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted")] = 50.0,
    max_seconds: Annotated[float, typer.Option(help="Longest audio accepted")] = 600.0,
    max_segments: Annotated[
        int, typer.Option(help="Most segments (model forward passes) one request may need")
    ] = 256,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (see `predict --help`)")] = "fp32",
    int8: Annotated[bool, typer.Option(help="ONNX export folders: use the int8 model")] = False,
) -> None:
    """Serve the model over HTTP, with a web page to upload or record audio."""
    from emoknn.predict import PRECISIONS
    from emoknn.serve import check_listen_address, serve

    check_port(port, "--port")
    check_number(max_upload_mb, "--max-upload-mb", 0.0, strict_minimum=True)
    check_number(max_seconds, "--max-seconds", 0.0, strict_minimum=True)
    check_int(max_segments, "--max-segments", 1)
    check_choice(precision, "--precision", PRECISIONS)
    check_listen_address(host, port)  # before loading the model: a busy port fails at once
    console.print(f"emoknn serving {model} on http://{host}:{port}/ (API docs: /docs)")
    serve(str(model), host, port, knn, max_upload_mb, max_seconds, precision, int8,
          max_segments=max_segments)  # fmt: skip


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Option(help="Trained run folder")],
    export_format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: MODEL/onnx)")] = None,
    quantize: Annotated[bool, typer.Option(help="Also write a dynamic int8 model")] = False,
) -> None:
    """Export encoder + head to ONNX (onnxruntime on CPU); the kNN stage is carried along."""
    check_choice(export_format, "--format", ("onnx",))
    _check_folder(model, "--model")
    if out is not None:
        _check_export_out(model, out)
    from emoknn.export import export_onnx

    meta = export_onnx(model, out, quantize)
    where = out or model / "onnx"
    console.print(
        f"Exported to {where / 'model.onnx'}: ONNX vs PyTorch max |Δ logit| = "
        f"{meta['parity_max_abs_logit_difference']:.1e} on {meta['parity_clips']} clips"
    )
    if "int8" in meta:
        q = meta["int8"]
        console.print(
            f"int8: {where / q['file']} ({q['size_mb']} MB vs {q['fp32_size_mb']} MB); "
            f"same prediction on {100 * q['prediction_agreement']:.1f}% of {q['clips']} clips, "
            f"max |Δ probability| {q['max_abs_probability_difference']:.3f}"
        )


def _check_export_out(model: Path, out: Path) -> None:
    """`export --out` may be a new or empty folder, or an earlier export: never the run itself,
    another run, or a folder of other files (the export writes datastore.npz, knn.json, ...)."""
    from emoknn.export import EXPORT_META_FILE

    _check_output_folder(out, "--out")
    if out.resolve() == model.resolve():
        raise ConfigError(
            f"--out {out} is the run folder itself; export into a folder of its own (default: "
            f"{model / 'onnx'})"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_META_FILE).is_file():
        raise ConfigError(
            f"--out {out}: folder exists, is not empty and holds no earlier export; choose a new "
            "folder so nothing is overwritten"
        )


def _quiet_third_party_noise() -> None:
    """Hide advertising and upstream deprecation chatter that says nothing about the user's run."""
    import logging
    import warnings

    class DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(DropTips())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `emoknn` console script and `python -m emoknn`."""
    _quiet_third_party_noise()
    try:
        app(args=argv, prog_name="emoknn")
    except EmoknnError as error:
        error_console.print(Text.assemble(("error:", "bold red"), " ", str(error)))
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        error_console.print("interrupted")
        raise SystemExit(130) from None
