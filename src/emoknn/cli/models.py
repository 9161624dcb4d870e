"""Models from elsewhere and to elsewhere: `emoknn convert` (old checkpoints), `emoknn import`
(a Hugging Face audio classifier), `emoknn adapt` (to one's own labelled clips, with kNN) and
`emoknn push` (to the Hugging Face Hub); `emoknn pack` (a self-contained copy of a folder)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from emoknn.checks import check_device
from emoknn.cli.common import console, error_console
from emoknn.cli.options import ClipBatch, Criterion, Device, Licence


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


def import_command(
    model: Annotated[str, typer.Argument(help="Hugging Face audio classifier: folder or hub name")],
    out: Annotated[Path, typer.Argument(help="emoknn model folder to write")],
) -> None:
    """Turn a published Hugging Face audio classifier into an emoknn model folder."""
    from emoknn.hf_import import check_import_destination, import_to_folder
    from emoknn.hub import resolve_model

    check_import_destination(model, out)  # before any download
    folder = import_to_folder(resolve_model(model), out)
    console.print(f"Wrote {folder}; predict, serve, export and adapt read it.", highlight=False)


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
            "[,arousal,valence,dominance] (ratings: needed by a dimensional model)"
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
    criterion: Criterion = "ua",
    licence: Licence = None,
    seed: Annotated[int, typer.Option(help="Seed of the stratified folds")] = 0,
    device: Device = None,
    batch_size: ClipBatch = 16,
    remedy: Annotated[
        str,
        typer.Option(
            help="What the folder ships: best (the best of the four on held-out folds of your "
            "clips), zero-shot (the model alone), knn (the model + a kNN over your clips), "
            "refit (a new linear head fitted on the model's training clips + yours), or "
            "refit+knn (that head + the kNN)"
        ),
    ] = "best",
    source_corpus: Annotated[
        Path | None,
        typer.Option(
            help="Where the training run's corpus lies now, if it moved (the head refit reads "
            "its training clips; a run's train_config.json names where it was)"
        ),
    ] = None,
) -> None:
    """Adapt a trained or published model to your own labelled clips: a kNN over them, a
    refitted head, or both, whichever scores best on held-out folds of your clips."""
    from emoknn.adapt import (
        REMEDY_CHOICES,
        adapt_model,
        check_new_folder,
        load_source,
        parse_label_map,
    )
    from emoknn.errors import ConfigError

    if remedy not in REMEDY_CHOICES:
        raise ConfigError(f"--remedy must be one of {', '.join(REMEDY_CHOICES)}, got {remedy!r}")
    mapping = parse_label_map(label_map) if label_map else None
    check_device(device, "--device")  # before loading anything, as predict does
    check_new_folder(out)
    source = load_source(model, "cpu")
    result = adapt_model(source, data, out, mapping, keep_datastore, folds, criterion, seed,
                         device, batch_size, licence, remedy, source_corpus)  # fmt: skip
    names = {"model": "zero-shot (model alone)", "knn": "kNN alone",
             "interpolated": "model + kNN", "refit": "head refit",
             "refit_knn": "head refit + kNN"}  # fmt: skip
    grouping = "speaker-grouped" if result.grouping == "speaker" else "stratified"
    table = Table(title=f"held-out clips, {result.folds} {grouping} folds")
    for column in ("inference", "UA % mean ± std", "WA % mean ± std"):
        table.add_column(column, justify="left" if column == "inference" else "right")
    for name, row in result.summary.items():
        table.add_row(names[name], f"{100 * row['ua_mean']:.1f} ± {100 * row['ua_std']:.1f}",
                      f"{100 * row['wa_mean']:.1f} ± {100 * row['wa_std']:.1f}")  # fmt: skip
    console.print(table)
    for comparison in result.comparisons:
        console.print(comparison["sentence"], highlight=False)
    dimensional = result.report.get("dimensional")
    if dimensional:  # a dimensional or multi-task model: its attributes, held out
        attributes = dimensional["attributes"]
        table = Table(title="held-out CCC per attribute (pooled), per-fold mean ± std")
        for column in ("inference", *attributes, "mean", "fold mean ± std"):
            table.add_column(column, justify="left" if column == "inference" else "right")
        for name, row in dimensional["summary"].items():
            pooled = row["pooled"]
            table.add_row(names[name], *(f"{pooled[a]:.3f}" for a in (*attributes, "mean")),
                          f"{row['ccc_mean']:.3f} ± {row['ccc_std']:.3f}")  # fmt: skip
        console.print(table)
    only_knn = sorted(set(result.labels) - set(result.model_labels))
    if not result.model_labels:
        console.print("The model knows none of your labels: every label is served by the kNN "
                      "alone (no model-alone figure; predict needs the kNN).", highlight=False)
    elif only_knn:
        console.print(f"served by the kNN alone (the model does not know them): "
                      f"{', '.join(only_knn)}", highlight=False)  # fmt: skip
    _print_remedy(result.report)
    chosen = result.tuning.interpolated
    console.print(
        f"Wrote {result.out_dir} (labels {', '.join(result.labels)}; k = {chosen.k}, "
        f"α = {chosen.alpha}, T = {chosen.to_dict()['temperature']}). Try: emoknn predict "
        f"CLIP.wav --model {shlex.quote(str(result.out_dir))}",
        highlight=False,
    )


def _print_remedy(report: dict) -> None:
    """Which remedy the folder ships, and by how much it beat zero-shot on held-out folds."""
    remedy, refit = report["remedy"], report.get("refit")
    if refit is not None:
        source = (f"{refit['source_clips']} training clips of {refit['source_corpus']}"
                  if refit["source_clips"] else "no source clips (the model records none)")
        console.print(f"head refit: {source} + yours; layers {refit['layers']} "
                      f"({refit['layer_choice']}), C = {refit['c']:g}", highlight=False)
    metric = remedy["criterion"].upper()
    line = f"Shipped: {remedy['chosen']}"
    if remedy["asked"] == "best":
        line += f" (the best held-out mean {metric})"
    if remedy["gain_over_zero_shot"] is not None:
        line += (f", {100 * remedy['gain_over_zero_shot']:+.1f} {metric} points over zero-shot "
                 f"({100 * remedy['zero_shot']:.1f}). {remedy['comparison']['sentence']}")
    console.print(line, highlight=False)


def push_command(
    run: Annotated[Path, typer.Argument(help="Model folder (with its README.md model card)")],
    repo_id: Annotated[str, typer.Argument(help="Hugging Face Hub repo id: owner/name")],
    private: Annotated[bool, typer.Option(help="Create the repo as private")] = False,
    licence: Licence = None,
) -> None:
    """Upload a model folder to the Hugging Face Hub (log in first: `hf auth login`)."""
    from emoknn.hub import push_model

    had_card = (run / "README.md").is_file()
    url = push_model(run, repo_id, private=private, licence=licence)
    if not had_card:
        console.print(f"Wrote the model card {run / 'README.md'} from the run's files.")
    console.print(f"Uploaded {run} to {url}; load it anywhere with --model {repo_id}",
                  highlight=False)  # fmt: skip


def pack_command(
    run: Annotated[Path, typer.Argument(help="Model folder (a head-only frozen run, or any)")],
    out: Annotated[Path, typer.Argument(help="New (or empty) folder for the self-contained copy")],
) -> None:
    """Write a self-contained copy of a model folder: the encoder's weights included, so it loads
    with no encoder store, encoder folder or network (a frozen run stores its head alone)."""
    from emoknn.model_folder import MODEL_FILE, pack_model, read_model_meta

    head_only = read_model_meta(run).head_only
    pack_model(run, out)
    size = (out / MODEL_FILE).stat().st_size / 2**20
    what = "the head and its encoder" if head_only else "its full weights"
    console.print(f"Wrote {out}: {what} ({size:.1f} MB); it loads anywhere with --model {out}",
                  highlight=False)  # fmt: skip
