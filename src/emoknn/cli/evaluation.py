"""`emoknn evaluate` (a trained model on another labelled corpus) and `emoknn crosscorpus` (train
on each corpus, test on every other: the cross-corpus matrix)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from emoknn.checks import check_choice, check_int
from emoknn.cli.common import console, error_console, label_map_setting, train_config
from emoknn.cli.options import (
    ClipBatch,
    CorpusOption,
    Device,
    Encoder,
    Epochs,
    FeatureCache,
    Kind,
    LabelMap,
    MaxSeconds,
    Preset,
    RecognizerModel,
    Seed,
)

Draws = Annotated[
    int,
    typer.Option(
        "--bootstrap", help="Bootstrap draws over speakers for the 95 % intervals (0: none)"
    ),
]


def evaluate_command(
    model: RecognizerModel,
    corpus: CorpusOption,
    kind: Kind = "auto",
    label_map: LabelMap = "default",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for evaluation.json and the confusion PNGs (new or empty)"),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    bootstrap: Draws = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap draws")] = 0,
    batch_size: ClipBatch = 16,
    device: Device = None,
) -> None:
    """Score a trained model (run, adapted, imported or exported) on another labelled corpus: UA,
    WA, per-class recall, the confusion matrix, intervals over the corpus's speakers; the
    corpus's classes the model cannot predict are listed in unknown_labels, never folded in."""
    import json

    from emoknn.checks import check_device
    from emoknn.corpora import CORPUS_KINDS, load_corpus
    from emoknn.evaluation import check_evaluation_folder, evaluate_model, write_evaluation
    from emoknn.predict import load_recognizer

    check_choice(output_format, "--format", ("table", "json"))
    check_choice(kind, "--kind", CORPUS_KINDS)
    check_int(bootstrap, "--bootstrap", 0)
    check_int(seed, "--seed", 0)
    check_int(batch_size, "--batch-size", 1)
    check_device(device, "--device")
    if out is not None:
        check_evaluation_folder(out)
    setting = label_map_setting(label_map)
    utterances = load_corpus(corpus, kind, label_map=setting)
    recognizer = load_recognizer(model, device)
    from rich.progress import Progress

    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("speakers", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        evaluation = evaluate_model(recognizer, utterances, draws=bootstrap, seed=seed,
                                    batch_size=batch_size, progress=advance)  # fmt: skip
    evaluation.info = {"model": str(model), "corpus": str(corpus.resolve()), "kind": kind,
                       "label_map": setting, **evaluation.info}  # fmt: skip
    data = write_evaluation(evaluation, out) if out is not None else evaluation.to_dict()
    if output_format == "json":
        print(json.dumps(data, indent=2))
    else:
        print_evaluation(data)
    if out is not None and output_format != "json":
        console.print(f"Written: {out}")


def _interval(values: list[float] | None) -> str:
    return "" if values is None else f" ({100 * values[0]:.1f}–{100 * values[1]:.1f})"


def print_evaluation(data: dict) -> None:
    """The scores of every inference as a table (a column each: narrow enough for a terminal);
    classes the model lacks below it."""
    inferences = data["inferences"]
    table = Table(title=f"{data['num_scored']} clips of {data['num_speakers']} speakers, % "
                  "(95 % interval over speakers)")  # fmt: skip
    table.add_column("")
    for name in inferences:
        table.add_column(name + (" ←" if name == data["inference"] else ""), justify="right")
    table.add_row("UA", *(f"{100 * s['ua']:.1f}{_interval(s['ua_interval'])}"
                          for s in inferences.values()))  # fmt: skip
    table.add_row("WA", *(f"{100 * s['wa']:.1f}{_interval(s['wa_interval'])}"
                          for s in inferences.values()))  # fmt: skip
    for label in data["confusion"]["true"]:
        table.add_row(f"recall {label}",
                      *(f"{100 * s['recall'][label]:.0f}" for s in inferences.values()))
    console.print(table)
    console.print(f"← what `emoknn predict` gives ({data['inference']}).")
    if "normalisation" in data:
        console.print(f"Speaker statistics: {data['normalisation']['note']}.")
    console.print("Corpus classes matched to the model's: "
                  + ", ".join(f"{c} → {m}" for c, m in data["label_pairs"].items()))  # fmt: skip
    for label, count in data["unknown_labels"].items():
        called = data["unknown_predicted"].get(label, {})
        most = max(called, key=called.get) if called else "-"
        console.print(f"Not scored: {count} clips of '{label}', a class the model cannot "
                      f"predict (mostly called '{most}')")  # fmt: skip


def crosscorpus_command(
    corpora: Annotated[
        list[Path],
        typer.Option("--corpus", help="A corpus folder or manifest .csv (give two or more)"),
    ],
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it exists)")],
    preset: Preset = "frozen",
    encoder: Encoder = None,
    epochs: Epochs = None,
    max_seconds: MaxSeconds = None,
    feature_cache: FeatureCache = None,
    seed: Seed = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="Corpus kind of each --corpus, in order (default: auto)"),
    ] = None,
) -> None:
    """Train on each corpus (all speakers but a validation speaker) and test on every other, on
    the classes each pair shares; the in-corpus LOSO cross-validation on the diagonal; the
    encoder probe and the classical baseline through the same protocol."""
    from emoknn.crosscorpus import crosscorpus, load_corpora, write_crosscorpus_report

    config = train_config(
        preset, encoder=encoder, max_epochs=epochs, max_seconds=max_seconds, seed=seed,
        progress_bar=False,
        feature_cache=None if feature_cache is None else str(feature_cache),
    )  # fmt: skip
    from emoknn.cli.common import check_encoder, check_output_folder

    check_output_folder(out, "--out")
    loaded = load_corpora(corpora, kind)
    check_encoder(config)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = crosscorpus(loaded, config, out, log=console.print)
    report = write_crosscorpus_report(results, out)
    console.print(f"Report: {report}\nResults: {out / 'results.json'}")
