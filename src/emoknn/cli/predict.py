"""Using a trained model: `emoknn predict` (one's own recordings), `emoknn serve` (HTTP and a web
page) and `emoknn export` (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from emoknn.checks import check_choice, check_int, check_number, check_port
from emoknn.cli.common import check_folder, check_output_folder, console, error_console, skipped
from emoknn.cli.options import ClipBatch, Device, InferencePrecision, Int8, Knn, RecognizerModel
from emoknn.errors import ConfigError, EmoknnError


def predict_command(
    model: RecognizerModel,
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Audio files or folders (recursive)")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    knn: Knn = True,
    window: Annotated[float | None, typer.Option(help="Segment length (s) for long files")] = None,
    hop: Annotated[float | None, typer.Option(help="Hop between segments (s)")] = None,
    segmentation: Annotated[str, typer.Option(help="window or vad (energy)")] = "window",
    batch_size: ClipBatch = 16,
    device: Device = None,
    precision: InferencePrecision = "fp32",
    int8: Int8 = False,
    neighbours: Annotated[
        int,
        typer.Option(
            help="List the N nearest training clips (datastore entries) behind each prediction "
            "and segment, with their share of the kNN probabilities (0 = off, at most 32)"
        ),
    ] = 0,
    speaker: Annotated[
        str | None,
        typer.Option(help="Speaker-normalised models: normalise with the statistics enrolled "
                     "as NAME in the model folder (`emoknn enrol`; unlabelled target audio)"),
    ] = None,
    enrolment: Annotated[
        Path | None, typer.Option(help="Speaker-normalised models: an enrolment file to use")
    ] = None,
    speakers: Annotated[
        Path | None,
        typer.Option(help="Speaker-normalised models: a CSV (path, speaker) of the inputs; each "
                     "speaker's clips give the statistics for each other (unlabelled)"),
    ] = None,
    speaker_column: Annotated[
        str, typer.Option(help="The --speakers CSV's speaker column")
    ] = "speaker",
    domain_stats: Annotated[
        Path | None,
        typer.Option(help="Speaker-normalised models: normalise with the statistics of a folder "
                     "of your unlabelled recordings (a domain)"),
    ] = None,
) -> None:
    """Predict the emotion of your own recordings (a model trained with --speaker-norm needs a
    speaker's or domain's unlabelled clips: --speaker, --enrolment, --speakers or
    --domain-stats)."""
    import csv
    import json
    import sys

    from rich.progress import Progress

    from emoknn.checks import check_device
    from emoknn.cli.speakers import statistics_groups
    from emoknn.knn import MAX_NEIGHBOURS
    from emoknn.predict import PRECISIONS, load_recognizer
    from emoknn.segments import MAX_WINDOW_SECONDS, SEGMENTATIONS

    check_choice(output_format, "--format", ("table", "json", "csv"))
    check_choice(segmentation, "--segmentation", SEGMENTATIONS)
    check_int(batch_size, "--batch-size", 1)
    check_choice(precision, "--precision", PRECISIONS)
    check_device(device, "--device")
    check_int(neighbours, "--neighbours", 0, MAX_NEIGHBOURS)
    if window is not None:
        check_number(window, "--window", 0.5, MAX_WINDOW_SECONDS)
    if hop is not None:
        check_number(hop, "--hop", 0.0, window, strict_minimum=True)
    recognizer = load_recognizer(model, device, knn, precision, int8)
    if getattr(recognizer, "note", None):
        error_console.print(f"note: {recognizer.note}", highlight=False)
    if neighbours and recognizer.store is None:
        raise ConfigError(
            f"--neighbours: {model} has no kNN datastore here (a checkpoint, an imported "
            "classifier, or --no-knn), so there are no training clips to list"
        )
    groups = statistics_groups(recognizer, list(inputs or []), speaker, enrolment, speakers,
                               speaker_column, domain_stats, batch_size)  # fmt: skip
    notes = [group.statistics.describe() for group in groups if group.statistics is not None]
    predictions = []
    total = sum(len(group.files) for group in groups)
    with Progress(console=error_console, transient=True, disable=total < 20) as progress:
        task = progress.add_task("predicting", total=total)
        for group in groups:
            for result in recognizer.predict_files(group.files, batch_size, window, hop,
                                                   segmentation, neighbours=neighbours,
                                                   statistics=group.statistics):  # fmt: skip
                if isinstance(result, EmoknnError):
                    skipped(str(result))
                else:
                    predictions.append(result)
                progress.advance(task)
    for note in notes:  # always said: these outputs used unlabelled target audio
        error_console.print(f"{note} (unlabelled target audio)", highlight=False)
    if not predictions:
        raise EmoknnError("nothing could be predicted")
    # A dimensional model gives no class (its labels say nothing); it and a multi-task model
    # give their attributes, after the class columns.
    labels = recognizer.labels if recognizer.predicts_classes else []
    attributes = recognizer.attributes or []

    def rated(values: dict[str, float] | None, digits: int) -> list[str]:
        return [f"{values[a]:.{digits}f}" if values else "" for a in attributes]

    if output_format == "json":
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif output_format == "csv":
        writer = csv.writer(sys.stdout)
        # no_speech last: the columns earlier versions wrote keep their places.
        # Neighbours (when asked) after that: five columns per rank, nearest first.
        fields = ("id", "label", "distance", "weight", "source")
        # With speaker statistics, a last column says which (unlabelled target audio).
        normalised = ["normalisation"] if notes else []
        writer.writerow(["source", "start_s", "end_s", "label", *labels, "no_speech",
                         *(f"neighbour{rank}_{name}" for rank in range(1, neighbours + 1)
                           for name in fields), *attributes, *normalised])  # fmt: skip

        def near(found) -> list:
            cells = []
            for n in found:
                cells += [n.id, n.label, f"{n.distance:.6g}", f"{n.weight:.4f}", n.source or ""]
            return cells + [""] * (len(fields) * (neighbours - len(found)))

        for p in predictions:
            how = [p.normalisation["note"] if p.normalisation else ""] if notes else []
            writer.writerow([p.source, 0.0, p.duration_s, p.label or "",
                             *(f"{p.probabilities[label]:.4f}" for label in labels),
                             int(p.no_speech), *near(p.neighbours),
                             *rated(p.attributes, 4), *how])  # fmt: skip
            for segment in p.segments:
                writer.writerow([p.source, segment.start_s, segment.end_s, segment.label or "",
                                 *(f"{segment.probabilities[x]:.4f}" for x in labels),
                                 int(segment.no_speech), *near(segment.neighbours),
                                 *rated(segment.attributes, 4), *how])  # fmt: skip
    else:
        # What was used, not what was asked: a checkpoint (or --no-knn) has no kNN stage.
        used_knn = recognizer.store is not None
        table = Table(title=f"emoknn — {'model + kNN' if used_knn else 'model only'} ({model})")
        table.add_column("file")
        table.add_column("seconds", justify="right")
        table.add_column("emotion", style="bold")
        for label in labels:
            table.add_column(label, justify="right")
        if neighbours:
            table.add_column("kNN weight", justify="right")
            table.add_column("distance", justify="right")
        blank = [""] * (2 if neighbours else 0)

        def add_neighbours(found, indent: str) -> None:
            # Under the prediction: the training clips it was pulled toward, nearest first.
            for rank, n in enumerate(found, 1):
                table.add_row(f"{indent}{rank}. {n.id}", "", n.label, *[""] * len(labels),
                              f"{n.weight:.2f}", f"{n.distance:.3g}", *[""] * len(attributes),
                              style="dim")  # fmt: skip

        for attribute in attributes:
            table.add_column(attribute, justify="right", style="cyan")
        for p in predictions:
            # No speech: say so instead of an emotion; the model's probabilities stay visible.
            emotion = "no speech" if p.no_speech else (p.label or "—")
            table.add_row(Path(p.source).name, f"{p.duration_s:.1f}", emotion,
                          *(f"{p.probabilities[label]:.2f}" for label in labels),
                          *blank, *rated(p.attributes, 2))  # fmt: skip
            add_neighbours(p.neighbours, "  ")
            for segment in p.segments:
                table.add_row(f"  {segment.start_s:.1f}–{segment.end_s:.1f} s", "",
                              "no speech" if segment.no_speech else (segment.label or "—"),
                              *(f"{segment.probabilities[x]:.2f}" for x in labels),
                              *blank, *rated(segment.attributes, 2))  # fmt: skip
                add_neighbours(segment.neighbours, "    ")
        console.print(table)
        if any(p.no_speech for p in predictions):
            error_console.print(
                "no speech: no 30 ms frame is louder than -45 dBFS (silence, a constant signal or "
                "faint noise); the probabilities of such inputs say nothing about emotion",
                style="yellow",
            )


def serve_command(
    model: RecognizerModel,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    knn: Knn = True,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted")] = 50.0,
    max_seconds: Annotated[float, typer.Option(help="Longest audio accepted")] = 600.0,
    max_segments: Annotated[
        int, typer.Option(help="Most segments (model forward passes) one request may need")
    ] = 256,
    max_queue: Annotated[
        int, typer.Option(help="Most requests waiting for the model; more get 503 (busy)")
    ] = 8,
    precision: InferencePrecision = "fp32",
    int8: Int8 = False,
    serve_neighbour_audio: Annotated[
        bool,
        typer.Option(
            help="Let the page play the nearest training clips (only the audio files the "
            "datastore lists; off by default: it exposes training audio to anyone who can reach "
            "the server)"
        ),
    ] = False,
    speaker: Annotated[
        str | None,
        typer.Option(help="Speaker-normalised models: the enrolled speaker (or domain) a "
                     "request that names none is normalised with"),
    ] = None,
) -> None:
    """Serve the model over HTTP, with a web page to upload or record audio."""
    from emoknn.predict import PRECISIONS
    from emoknn.serve import check_listen_address, serve

    check_port(port, "--port")
    check_number(max_upload_mb, "--max-upload-mb", 0.0, strict_minimum=True)
    check_number(max_seconds, "--max-seconds", 0.0, strict_minimum=True)
    check_int(max_segments, "--max-segments", 1)
    check_int(max_queue, "--max-queue", 0)
    check_choice(precision, "--precision", PRECISIONS)
    check_listen_address(host, port)  # before loading the model: a busy port fails at once
    if serve_neighbour_audio:
        error_console.print(
            "--serve-neighbour-audio: the training clips the datastore lists can be played by "
            "anyone who can reach this server",
            style="yellow",
        )
    serve(str(model), host, port, knn, max_upload_mb, max_seconds, precision, int8,
          max_segments=max_segments, max_queue=max_queue,
          serve_neighbour_audio=serve_neighbour_audio,
          announce=lambda line: console.print(line, highlight=False),
          default_speaker=speaker)  # fmt: skip


def export_command(
    model: Annotated[
        Path,
        typer.Option(help="An emoknn model folder: a training run, or an adapted or imported "
                     "model (model.safetensors + model.json)"),
    ],
    export_format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: MODEL/onnx)")] = None,
    quantize: Annotated[bool, typer.Option(help="Also write a dynamic int8 model")] = False,
) -> None:
    """Export encoder + head to ONNX (onnxruntime on CPU); the kNN stage is carried along."""
    check_choice(export_format, "--format", ("onnx",))
    check_folder(model, "--model")
    if out is not None:
        check_export_out(model, out)
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


def check_export_out(model: Path, out: Path) -> None:
    """`export --out` may be a new or empty folder, or an earlier export: never the run itself,
    another run, or a folder of other files (the export writes datastore.npz, knn.json, ...)."""
    from emoknn.export import EXPORT_META_FILE

    check_output_folder(out, "--out")
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
