"""`emoknn corpus ...` (list, download, verify and inspect corpora, generate the synthetic one),
`emoknn augment preview`."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from emoknn.checks import check_choice, check_int, check_number
from emoknn.cli.common import (
    check_folder,
    check_output_folder,
    console,
    error_console,
    label_map_setting,
)
from emoknn.cli.options import Kind, LabelMap, RirDir
from emoknn.errors import ConfigError, EmoknnError

corpus_app = typer.Typer(
    help="List, download, verify and inspect corpora; generate the synthetic one.",
    no_args_is_help=True,
)
augment_app = typer.Typer(help="Listen to the augmented views.", no_args_is_help=True)


def print_table(table: Table) -> None:
    """Print `table` whole: in a terminal as wide as it is, elsewhere (a pipe, a file, where
    rich assumes 80 columns) as wide as the table needs, so no cell is cut to "spe…"."""
    from rich.measure import Measurement

    if console.is_terminal:
        console.print(table)
        return
    # A console of its own as wide as the table (print's `width` is capped at the console's, and
    # setting the shared console's width would pin it for every later command in the process).
    from rich.console import Console

    needed = Measurement.get(console, console.options.update_width(100_000), table).maximum
    Console(file=console.file, width=needed, soft_wrap=True, markup=False, emoji=False,
            highlight=False).print(table)  # fmt: skip


@corpus_app.command("summarize")
def corpus_summarize(
    path: Annotated[Path, typer.Argument(help="Corpus folder or manifest .csv")],
    kind: Kind = "auto",
    label_map: LabelMap = "default",
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
    utterances = load_corpus(
        path, kind, skip_missing=skip_missing, label_map=label_map_setting(label_map)
    )
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
    print_table(table)


@corpus_app.command("list")
def corpus_list() -> None:
    """Every supported corpus: licence, access, size, speakers, classes, language, protocol."""
    from emoknn.corpora import CORPORA

    table = Table(title="Corpora (--kind NAME); `download` ones: emoknn corpus download NAME DEST")
    for column in ("kind", "lang", "licence", "get it", "size", "utts", "spk", "classes",
                   "protocol"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for info in CORPORA.values():
        table.add_row(
            info.name, info.language, info.short[0], info.access, info.size,
            f"{info.utterances:,}" if info.utterances else "—", str(info.speakers or "—"),
            info.classes.split(" (")[0], info.short[1],
        )  # fmt: skip
    console.print(table)
    console.print("LOSO = leave-one-speaker-out; official = the corpus's own train / validation / "
                  "test (--scheme official). Licence terms, sources and layouts: `emoknn corpus "
                  "download NAME` (gated ones print where to register) and docs.")  # fmt: skip


def interactive() -> bool:
    """Whether a person can answer a prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def accept_licence(info, accepted: bool) -> None:
    """Print the licence; go on if it needs no acceptance, was accepted with --accept-licence,
    or the user says yes at a terminal; else one clear error."""
    from emoknn.corpora.download import licence_text

    console.print(licence_text(info))
    if not info.accept or accepted:
        return
    if not interactive():
        raise ConfigError(
            f"{info.title}: its licence ({info.licence}) restricts use; accept it with "
            "--accept-licence to download",
            setting="--accept-licence",
        )
    if not typer.confirm("Do you accept these terms?", default=False):
        raise EmoknnError(f"{info.title}: licence not accepted; nothing was downloaded")


@contextmanager
def download_progress() -> Iterator:
    """A rich progress bar per transfer; yields the callback `download_corpus` reports to."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, object] = {}

        def update(what: str, done: int, total: int | None) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        yield update


@corpus_app.command("download")
def corpus_download(
    name: Annotated[str, typer.Argument(help="Corpus name (see `emoknn corpus list`)")],
    dest: Annotated[Path, typer.Argument(help="New folder to download into")],
    url: Annotated[
        str | None,
        typer.Option("--url", "--mirror", help="A mirror you trust (the checksum checks stay)"),
    ] = None,
    accept_licence_: Annotated[
        bool, typer.Option("--accept-licence", help="Accept the corpus's licence terms")
    ] = False,
) -> None:
    """Download, verify and unpack an openly available corpus into DEST (all of it or nothing).

    Licence-gated corpora (IEMOCAP, MSP-Podcast, ESD, SAVEE, ...) are not downloaded: this says
    where to register and which tree to build; then check it with `emoknn corpus verify`."""
    from emoknn.corpora import CORPORA, corpus_info
    from emoknn.corpora.download import download_corpus, manual_instructions

    check_choice(name, "NAME", tuple(CORPORA))
    check_output_folder(dest, "DEST")
    info = corpus_info(name)
    if info.access != "download":
        console.print(manual_instructions(info))
        raise typer.Exit(1)
    accept_licence(info, accept_licence_)
    try:
        with download_progress() as progress:
            report = download_corpus(name, dest, url=url, accept_licence=True,
                                     progress=progress)  # fmt: skip
    except KeyboardInterrupt:
        error_console.print(f"Interrupted: what was downloaded is kept beside {dest}; run the "
                            "same command again to resume.")  # fmt: skip
        raise
    for line in report.lines:
        console.print(line)


@corpus_app.command("verify")
def corpus_verify(
    name: Annotated[str, typer.Argument(help="Corpus name (see `emoknn corpus list`)")],
    path: Annotated[Path, typer.Argument(help="Your copy of the corpus")],
    checksums: Annotated[
        bool, typer.Option(help="Hash every file where per-file sha256s are known (CREMA-D)")
    ] = True,
) -> None:
    """Check a copy: it loads, its counts, official splits, no LFS stubs, known-bad files."""
    from emoknn.corpora import CORPORA
    from emoknn.corpora.verify import verify_corpus

    check_choice(name, "NAME", tuple(CORPORA))
    report = verify_corpus(name, path, checksums=checksums)
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for check in report.checks:
        console.print(Text.assemble((f"{check.status:>4}", styles[check.status]), " ", check.text))
    if not report.ok:
        raise EmoknnError(f"{path}: not a complete {name} corpus (see the failed checks above)")
    console.print(f"{path}: {len(report.utterances)} utterances of {name}; every check passed")


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
    rir_dir: RirDir = None,
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
