"""`emoknn train` (one fold), `emoknn crossval` (every fold, the paper's tables) and `emoknn report`
(merge cross-validation folders into one report)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from emoknn.checks import check_choice
from emoknn.cli.common import (
    check_encoder,
    check_fold_ratings,
    check_folder,
    check_output_folder,
    console,
    label_map_info,
    load_folds,
    train_config,
)
from emoknn.cli.datastore import build_datastore
from emoknn.cli.options import (
    Accelerator,
    BatchSize,
    CachePrecision,
    CacheViews,
    CorpusOption,
    Criterion,
    CutLayer,
    Devices,
    Encoder,
    Epochs,
    FeatureCache,
    FrameCacheGb,
    FreezeEncoder,
    Kind,
    KnnTuning,
    LabelMap,
    LearningRate,
    MaxSeconds,
    Preset,
    Progress,
    RegressionLoss,
    RirDir,
    Scheme,
    Seed,
    SpeakerNorm,
    Task,
    TrainPrecision,
    TuneLayers,
    TuneLr,
    Workers,
)
from emoknn.errors import ConfigError, EmoknnError


def train_command(
    corpus: CorpusOption,
    fold: Annotated[str, typer.Option(help="Fold index or test speaker (e.g. 0 or Ses01F)")] = "0",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<corpus>/...)")] = None,
    kind: Kind = "auto",
    scheme: Scheme = "speaker",
    label_map: LabelMap = "default",
    preset: Preset = "paper",
    encoder: Encoder = None,
    augment: Annotated[
        str | None, typer.Option(help="none|noise|volume|reverb|pitch|mixed")
    ] = None,
    rir_dir: RirDir = None,
    contrastive_weight: Annotated[
        float | None, typer.Option("--lambda", help="λ: weight of SupCon (0 = CE only)")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="SupCon τ")] = None,
    task: Task = None,
    regression_loss: RegressionLoss = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adamw")] = None,
    max_seconds: MaxSeconds = None,
    monitor: Annotated[
        str | None, typer.Option(help="val_loss, val_ua, val_wa or (dimensional) val_ccc")
    ] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Stop after N bad epochs")] = None,
    layer_weighting: Annotated[bool | None, typer.Option(help="Weighted sum of layers")] = None,
    freeze_feature_encoder: Annotated[bool | None, typer.Option(help="Freeze the CNN")] = None,
    freeze_encoder: FreezeEncoder = None,
    feature_cache: FeatureCache = None,
    cache_views: CacheViews = None,
    cache_precision: CachePrecision = None,
    tune_layers: TuneLayers = None,
    cut_layer: CutLayer = None,
    tune_lr: TuneLr = None,
    frame_cache_gb: FrameCacheGb = None,
    speaker_norm: SpeakerNorm = False,
    seed: Seed = None,
    workers: Workers = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (DDP)")] = None,
    precision: TrainPrecision = None,
    tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard")] = False,
    progress: Progress = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out")] = False,
    knn: Annotated[
        bool, typer.Option(help="Build the kNN datastore and tune k, α, T after")
    ] = True,
    criterion: Criterion = "ua",
    knn_tuning: KnnTuning = None,
) -> None:
    """Fine-tune on one speaker-independent fold with CE + SupCon on augmented views (--task
    dimensional|both: a regression head for arousal, valence, dominance too)."""
    from emoknn.corpora import label_names
    from emoknn.knn import CRITERIA
    from emoknn.train import train_fold

    check_choice(criterion, "--criterion", CRITERIA)
    check_folder(rir_dir, "--rir-dir")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs TensorBoard: pip install tensorboard")
    if out is not None:
        check_output_folder(out, "--out")
    config = train_config(
        preset, encoder=encoder, augment=augment,
        rir_dir=None if rir_dir is None else str(rir_dir),
        contrastive_weight=contrastive_weight, temperature=temperature, max_epochs=epochs,
        task=task, regression_loss=regression_loss,
        batch_size=batch_size, learning_rate=lr, optimizer=optimizer, max_seconds=max_seconds,
        monitor=monitor, early_stopping_patience=early_stopping, layer_weighting=layer_weighting,
        freeze_feature_encoder=freeze_feature_encoder, seed=seed, num_workers=workers,
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        tensorboard=tensorboard, progress_bar=progress, freeze_encoder=freeze_encoder,
        feature_cache=None if feature_cache is None else str(feature_cache),
        cache_views=cache_views, cache_precision=cache_precision, speaker_norm=speaker_norm or None,
        tune_layers=tune_layers, cut_layer=cut_layer, tune_learning_rate=tune_lr,
        frame_cache_gb=frame_cache_gb,
    )  # fmt: skip
    from emoknn.speaker_tuning import check_knn_tuning, default_knn_tuning

    knn_tuning = check_knn_tuning(knn_tuning or default_knn_tuning(config.freeze_encoder),
                                  config.freeze_encoder)  # fmt: skip
    utterances, chosen = load_folds(corpus, kind, scheme, fold, label_map)
    if len(chosen) != 1:
        raise EmoknnError(f"--fold must name one fold, got {fold!r} ({len(chosen)} folds)")
    selected = chosen[0]
    if out is None:
        name = f"{preset}-{config.augment}-l{config.contrastive_weight:g}-s{config.seed}"
        if config.task != "categorical":
            name += f"-{config.task}"
        out = Path("runs") / corpus.stem / name / selected.name
        check_output_folder(out, "--out")
    check_encoder(config)
    extra_info = {"corpus": str(corpus.resolve()), "kind": kind, "scheme": scheme,
                  **label_map_info(label_map),
                  "fold": selected.name, "test_speaker": selected.test_speaker,
                  "val_speaker": selected.val_speaker}  # fmt: skip
    labels = label_names(utterances)
    if config.freeze_encoder:
        from emoknn.frozen import train_frozen_fold

        result = train_frozen_fold(
            config, selected.train, selected.val, labels, out, resume=resume,
            extra_info=extra_info, log=console.print,
        )  # fmt: skip
    elif config.tune_layers:
        from emoknn.features import default_cache_dir
        from emoknn.partial import load_context, train_partial_fold

        root = Path(config.feature_cache) if config.feature_cache else default_cache_dir(out)
        context = load_context(config, labels, root)
        result = train_partial_fold(
            config, selected.train, selected.val, labels, out, context, resume=resume,
            extra_info=extra_info, log=console.print,
        )  # fmt: skip
    else:
        result = train_fold(config, selected.train, selected.val, labels, out, resume=resume,
                            extra_info=extra_info)  # fmt: skip
    if not result.is_global_zero:
        return
    files = (
        f"model: {result.best_checkpoint}"  # a frozen run's result is its model file
        if config.freeze_encoder or config.tune_layers
        else f"best: {result.best_checkpoint}\nlast: {result.last_checkpoint}"
    )
    console.print(
        f"Trained {selected.name} ({result.epochs} epoch{'' if result.epochs == 1 else 's'}). "
        f"Best {config.monitor} = "
        f"{result.best_score if result.best_score is not None else float('nan'):.4f}\n{files}"
    )
    if knn:
        build_datastore(out, selected.train, selected.val, config.max_seconds, criterion, "exact",
                        knn_tuning=knn_tuning)  # fmt: skip


def print_summary(summary: list[dict], title: str) -> None:
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


def print_dimensional(results: dict) -> None:
    """Dimensional tasks: mean CCC (and per attribute) of each variant, and the paired CCC
    comparisons."""
    summary = results.get("dimensional_summary")
    if not summary:
        return
    attributes = summary[0]["attributes"]
    table = Table(title="Attributes: CCC, mean ± std over folds")
    for column in ("variant", "folds", "mean CCC", *attributes):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in summary:
        cells = [f"{row[f'ccc_{a}_mean']:.3f} ± {row[f'ccc_{a}_std']:.3f}"
                 for a in ("mean", *attributes)]  # fmt: skip
        table.add_row(row["variant"], str(row["folds"]), *cells)
    console.print(table)
    for c in results.get("dimensional_comparisons") or []:
        console.print(f"  - {c['name']}: ΔCCC {c['mean']:+.3f}, p {c['p_value']:.3g} "
                      f"({len(c['folds'])} folds)", highlight=False)  # fmt: skip


def print_comparisons(comparisons: list[dict]) -> None:
    """One sentence per paired comparison (how they are tested: emoknn.stats.METHOD_NOTE)."""
    from emoknn.stats import METHOD_NOTE

    if comparisons:
        console.print("Paired comparisons over folds:")
        for comparison in comparisons:
            console.print(f"  - {comparison['sentence']}", highlight=False)
        console.print(METHOD_NOTE, style="dim")


def run_crossval(corpus: Path, kind: str, scheme: str, folds: str | None, tables: str,
                 out: Path, config, criterion: str = "ua", label_map: str = "default",
                 knn_tuning: str | None = None,
                 baseline_features: str = "eGeMAPSv02") -> Path:  # fmt: skip
    """Cross-validate, print each finished fold and the summary, write the report."""
    import json

    from emoknn.baseline import FEATURE_SETS
    from emoknn.corpora import HONESTY_NOTE, is_synthetic_corpus, label_names
    from emoknn.experiments import crossval, dimensional_label, trainings_for
    from emoknn.folds import describe_protocol
    from emoknn.knn import CRITERIA
    from emoknn.report import write_report
    from emoknn.speaker_tuning import check_knn_tuning, default_knn_tuning

    check_choice(criterion, "--criterion", CRITERIA)
    knn_tuning = check_knn_tuning(knn_tuning or default_knn_tuning(config.freeze_encoder),
                                  config.freeze_encoder)  # fmt: skip
    check_choice(baseline_features, "--baseline-features", FEATURE_SETS)
    table_names = [t.strip() for t in tables.split(",") if t.strip()]
    if not table_names:
        raise ConfigError(
            f"--tables must name one or more of main, augment, lambda; got {tables!r}"
        )
    try:
        trainings_for(table_names)
    except ConfigError as error:
        raise ConfigError(f"--tables {tables!r}: {error}") from None
    check_output_folder(out, "--out")
    utterances, chosen = load_folds(corpus, kind, scheme, folds, label_map)
    check_fold_ratings(config.task, chosen)
    check_encoder(config)
    synthetic = corpus.is_dir() and is_synthetic_corpus(corpus)
    if synthetic:
        console.print(HONESTY_NOTE, style="yellow")
    meta = {
        "corpus": str(corpus.resolve()), "kind": kind,
        "corpus_name": corpus.resolve().name + (" (synthetic)" if synthetic else ""),
        "scheme": scheme, "synthetic": synthetic, "num_utterances": len(utterances),
        "labels": label_names(utterances), "preset": config.preset_name,
        "encoder": config.encoder, "speaker_norm": config.speaker_norm,
        **label_map_info(label_map), "protocol": describe_protocol(chosen),
    }  # fmt: skip
    if not config.progress_bar:  # each fold prints its own line below; Lightning's add nothing
        import logging

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    protocol = meta["protocol"]
    console.print(
        f"Cross-validating {len(chosen)} fold(s) of {len(utterances)} utterances, tables: "
        f"{', '.join(table_names)} → {out}\nProtocol: {protocol['protocol']}, "
        f"{protocol['independence']}"
    )

    def done(result: dict) -> None:
        scores, parts = result["scores"], []
        if "model" in scores:
            with_knn = (f" (+kNN {100 * scores['interpolated']['ua']:.1f})"
                        if "interpolated" in scores else "")  # fmt: skip
            if "layer" in result:  # the encoder probe: what it chose, and what it cost
                seconds = result.get("seconds")
                cost = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
                with_knn = f" (layer {result['layer']}, C {result['c']:g}{cost})"
            parts.append(f"UA {100 * scores['model']['ua']:.1f}{with_knn}")
        dimensional = result.get("dimensional")
        if dimensional:  # mean CCC over the attributes
            with_knn = (f" (+kNN {dimensional['interpolated']['mean']['ccc']:.3f})"
                        if "interpolated" in dimensional else "")  # fmt: skip
            parts.append(f"CCC {dimensional['model']['mean']['ccc']:.3f}{with_knn}")
        label = result["label"] if "model" in scores else dimensional_label(result)
        console.print(f"  {result['fold']} {label:<8} {', '.join(parts)}",
                      highlight=False)  # fmt: skip

    crossval(utterances, chosen, config, out, table_names, meta, on_fold_done=done,
             criterion=criterion, log=console.print, knn_tuning=knn_tuning,
             baseline_features=baseline_features)  # fmt: skip
    if int(os.environ.get("LOCAL_RANK", "0")) or int(os.environ.get("NODE_RANK", "0")):
        return out / "report.md"  # a DDP helper process: the first process reports
    report = write_report([out], out, meta)
    results = json.loads((out / "results.json").read_text())
    if results["summary"]:
        print_summary(results["summary"], f"{meta['corpus_name']}: mean ± std over folds")
    print_comparisons(results["comparisons"])
    print_dimensional(results)
    if synthetic:
        console.print(HONESTY_NOTE, style="yellow")
    console.print(f"Report: {report}\nResults: {out / 'results.json'}")
    return report


def crossval_command(
    corpus: CorpusOption,
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it exists)")],
    folds: Annotated[str | None, typer.Option(help="Folds, e.g. 0,3-5 or Ses01F (all)")] = None,
    tables: Annotated[str, typer.Option(help="main, augment, lambda (comma list)")] = "main",
    kind: Kind = "auto",
    scheme: Scheme = "speaker",
    label_map: LabelMap = "default",
    preset: Preset = "paper",
    encoder: Encoder = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    max_seconds: MaxSeconds = None,
    freeze_encoder: FreezeEncoder = None,
    feature_cache: FeatureCache = None,
    cache_views: CacheViews = None,
    cache_precision: CachePrecision = None,
    tune_layers: TuneLayers = None,
    cut_layer: CutLayer = None,
    tune_lr: TuneLr = None,
    frame_cache_gb: FrameCacheGb = None,
    task: Task = None,
    regression_loss: RegressionLoss = None,
    speaker_norm: SpeakerNorm = False,
    seed: Seed = None,
    workers: Workers = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    precision: TrainPrecision = None,
    progress: Progress = False,
    criterion: Criterion = "ua",
    knn_tuning: KnnTuning = None,
    baseline_features: Annotated[
        str,
        typer.Option(
            "--baseline-features",
            help="openSMILE functionals of the classical baseline: eGeMAPSv02 (88, the field's "
            "standard) or ComParE_2016 (6,373)",
        ),
    ] = "eGeMAPSv02",
) -> None:
    """Train and evaluate every fold (or --folds) for the paper's tables; write a report."""
    config = train_config(
        preset, task=task, regression_loss=regression_loss, encoder=encoder, max_epochs=epochs,
        batch_size=batch_size, learning_rate=lr,
        max_seconds=max_seconds, seed=seed, num_workers=workers, accelerator=accelerator,
        devices=devices, precision=precision, progress_bar=progress,
        freeze_encoder=freeze_encoder, cache_views=cache_views, cache_precision=cache_precision,
        feature_cache=None if feature_cache is None else str(feature_cache),
        speaker_norm=speaker_norm or None, tune_layers=tune_layers, cut_layer=cut_layer,
        tune_learning_rate=tune_lr, frame_cache_gb=frame_cache_gb,
    )  # fmt: skip
    run_crossval(corpus, kind, scheme, folds, tables, out, config, criterion, label_map,
                 knn_tuning, baseline_features)


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
        check_folder(run_dir, "RUN_DIRS")
    if out is not None:
        check_output_folder(out, "--out")
    experiment = run_dirs[0] / EXPERIMENT_FILE
    meta = read_json_object(experiment).get("corpus", {}) if experiment.is_file() else {}
    if not isinstance(meta, dict):
        raise EmoknnError(f"{experiment}: 'corpus' must be a JSON object")
    out = out or run_dirs[0]
    report = write_report(run_dirs, out, meta)
    results = json.loads((out / "results.json").read_text())
    if results["summary"]:
        print_summary(
            results["summary"], f"{meta.get('corpus_name', 'merged')}: mean ± std over folds"
        )
    print_comparisons(results["comparisons"])
    print_dimensional(results)
    console.print(f"Report: {report}")
