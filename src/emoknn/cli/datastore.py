"""`emoknn datastore build` / `add` / `inspect`: a run's kNN datastore, built from its fold or
extended with one's own labelled audio (no retraining), and looked over for duplicates and likely
mislabels; `build_datastore` also serves `emoknn train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emoknn.checks import check_choice
from emoknn.cli.common import check_folder, console
from emoknn.cli.options import Criterion, KnnTuning
from emoknn.errors import ConfigError, EmoknnError

datastore_app = typer.Typer(help="Build, extend or inspect a run's kNN datastore.",
                            no_args_is_help=True)  # fmt: skip


def build_datastore(run_dir, train, val, max_seconds, criterion, index_type,
                     discard_added: bool = False, knn_tuning: str | None = None
                     ) -> None:  # fmt: skip
    from emoknn.inference import feature_cache_of, fit_run_knn
    from emoknn.model_folder import load_calibration
    from emoknn.speaker_tuning import default_knn_tuning

    knn_tuning = knn_tuning or default_knn_tuning(feature_cache_of(run_dir) is not None)
    store, tuning = fit_run_knn(run_dir, train, val, max_seconds, criterion, index_type,
                                discard_added=discard_added, knn_tuning=knn_tuning)  # fmt: skip
    from emoknn.model_folder import read_model_meta

    chosen, alone = tuning.interpolated, tuning.knn_only
    where = ("over the training speakers' inner folds and the validation speaker"
             if knn_tuning == "speakers" else "on the validation speaker")  # fmt: skip
    console.print(f"kNN datastore: {len(store)} utterances → {run_dir / 'datastore.npz'}")
    # A dimensional model's classifier is never trained: its UA-tuned kNN would mean nothing.
    if read_model_meta(run_dir).model_config.get("task", "categorical") != "dimensional":
        calibration = load_calibration(run_dir)
        console.print(
            f"tuned {where} ({criterion.upper()}): k={chosen.k} α={chosen.alpha} "
            f"T={chosen.temperature:.3g} ({criterion.upper()} {chosen.score:.3f}); kNN alone: "
            f"k={alone.k} T={alone.temperature:.3g} ({criterion.upper()} {alone.score:.3f})\n"
            f"probability temperatures (calibration.json): model "
            f"{calibration.model_temperature:.3g}, interpolation "
            f"{calibration.interpolated_temperature:.3g}"
        )
    if tuning.regression is not None:  # a dimensional model: the regression kNN, for mean CCC
        chosen, alone = tuning.regression.interpolated, tuning.regression.knn_only
        console.print(
            f"attributes ({', '.join(store.attributes or [])}), tuned for mean CCC: k={chosen.k} "
            f"α={chosen.alpha} T={chosen.temperature:.3g} (CCC {chosen.score:.3f}); kNN alone: "
            f"k={alone.k} T={alone.temperature:.3g} (CCC {alone.score:.3f})"
        )


@datastore_app.command("build")
def datastore_build(
    run: Annotated[Path, typer.Argument(help="A training run folder")],
    corpus: Annotated[Path | None, typer.Option(help="Corpus, if moved since training")] = None,
    criterion: Criterion = "ua",
    index: Annotated[
        str, typer.Option(help="exact, or hnsw (approximate, large stores)")
    ] = "exact",
    discard_added: Annotated[
        bool, typer.Option(help="Drop utterances added by an earlier model (`datastore add`)")
    ] = False,
    knn_tuning: KnnTuning = None,
) -> None:
    """Embed the run's train + validation utterances, tune k, α, T (over inner folds of the
    training speakers for a frozen run, else on the validation speaker) and fit the temperatures
    of its probabilities; utterances added with `datastore add` are kept."""
    from emoknn.inference import fold_of_run
    from emoknn.knn import CRITERIA, INDEX_TYPES
    from emoknn.model_folder import run_max_seconds

    check_choice(criterion, "--criterion", CRITERIA)
    check_choice(index, "--index", INDEX_TYPES)
    check_folder(run, "RUN")

    fold = fold_of_run(run, corpus)
    build_datastore(run, fold.train, fold.val, run_max_seconds(run), criterion, index,
                     discard_added, knn_tuning)  # fmt: skip


def added_id(name: str) -> str:
    """The datastore id of an added clip: `added/` and its path relative to here (its file name
    when it lies elsewhere), never an absolute path (a pushed model would publish it) nor a
    doubled slash."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        try:
            path = path.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            path = Path(path.name)
    return "added/" + path.as_posix().lstrip("/")


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

    check_folder(run, "RUN")
    if manifest is not None and (audio or label):
        raise ConfigError("give either audio files with --label, or --manifest CSV, not both")
    if manifest is not None:
        utterances = [replace(u, id=added_id(u.id)) for u in load_manifest(manifest)]
    elif audio and label is not None and label.strip():
        missing = [str(p) for p in audio if not p.is_file()]
        if missing:
            raise EmoknnError(f"{missing[0]}: file not found" + (
                f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))  # fmt: skip
        utterances = [Utterance(added_id(str(p)), p, label, "added") for p in audio]
    else:
        raise EmoknnError("give audio files with a non-empty --label, or --manifest CSV")
    store = add_to_datastore(run, utterances)
    console.print(f"Added {len(utterances)} utterances; the datastore now holds {len(store)}.")


@datastore_app.command("inspect")
def datastore_inspect(
    run: Annotated[Path, typer.Argument(help="A model folder with a datastore (run, export, ...)")],
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a t-SNE map to this new file (.png, .pdf or .svg; an existing "
                     "file is refused, not overwritten)"),
    ] = None,
    no_plot: Annotated[
        bool, typer.Option("--no-plot", help="No t-SNE map (the default without --plot)")
    ] = False,
    near_factor: Annotated[
        float,
        typer.Option(help="'Very near': within this fraction of the median nearest distance"),
    ] = 0.25,
    vote_k: Annotated[
        int, typer.Option(help="Flag entries whose K nearest all carry one other label")
    ] = 5,
    output_format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Counts per label and speaker, exact duplicates, near duplicates with another label (likely
    mislabels), and with --plot FILE a t-SNE map of the datastore coloured by label."""
    import json

    from emoknn.checks import check_int, check_number
    from emoknn.store_inspect import inspect_run

    check_choice(output_format, "--format", ("text", "json"))
    check_number(near_factor, "--near-factor", 0.0, strict_minimum=True)
    check_int(vote_k, "--vote-k", 1)
    check_folder(run, "RUN")
    try:
        inspection = inspect_run(run, None if no_plot else plot, near_factor, vote_k)
    except ConfigError as error:
        raise error.renamed("--vote-k") if error.setting == "vote_k" else error from None
    if output_format == "json":
        print(json.dumps(inspection.to_dict(), indent=2))
    else:
        console.print(inspection.to_text(), highlight=False, markup=False)
