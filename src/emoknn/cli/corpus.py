"""`emoknn corpus ...` (inspect corpora, generate the synthetic one), `emoknn augment preview`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from emoknn.checks import check_choice, check_int, check_number
from emoknn.cli.common import check_folder, check_output_folder, console
from emoknn.cli.options import Kind

corpus_app = typer.Typer(
    help="Inspect corpora and generate the synthetic one.", no_args_is_help=True
)
augment_app = typer.Typer(help="Listen to the augmented views.", no_args_is_help=True)


@corpus_app.command("summarize")
def corpus_summarize(
    path: Annotated[Path, typer.Argument(help="Corpus folder or manifest .csv")],
    kind: Kind = "auto",
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
    check_folder(rir_dir, "--rir-dir")
    check_output_folder(out_dir, "OUT_DIR")
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
