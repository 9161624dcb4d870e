"""Speaker (or domain) statistics from unlabelled clips on the command line: `emoknn enrol`, and
the statistics `emoknn predict` takes (`--speaker`, `--enrolment`, `--speakers CSV`,
`--domain-stats FOLDER`) for a model trained with `--speaker-norm` (emoknn.speaker_stats)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from emoknn.cli.common import check_folder, console, skipped
from emoknn.cli.options import ClipBatch, Device, RecognizerModel
from emoknn.errors import ConfigError, EmoknnError

SPEAKER_COLUMN = "speaker"
PATH_COLUMN = "path"


def enrol_command(
    clips: Annotated[
        list[Path], typer.Argument(help="Unlabelled audio files or folders (recursive) of them")
    ],
    model: RecognizerModel,
    speaker: Annotated[
        str | None, typer.Option(help="Enrol these clips as this speaker's statistics")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option(help="Enrol them as a domain's statistics (many speakers, one setting)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the enrolment file here (default: MODEL/enrolments/NAME.npz)"),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing enrolment")] = False,
    batch_size: ClipBatch = 16,
    device: Device = None,
) -> None:
    """Enrol a speaker (or a domain) for a model trained with --speaker-norm: the statistics of
    their unlabelled clips, kept with the model (predict --speaker NAME, serve ?speaker=NAME)."""
    from emoknn.checks import check_device, check_int
    from emoknn.inputs import find_audio_files
    from emoknn.model_folder import check_enrolment_name, enrolment_path, save_enrolment
    from emoknn.predict import load_recognizer

    if (speaker is None) == (domain is None):
        raise ConfigError("give --speaker NAME or --domain NAME (one of them)")
    kind, name = ("speaker", speaker) if speaker is not None else ("domain", domain)
    check_enrolment_name(name, f"--{kind}")
    check_int(batch_size, "--batch-size", 1)
    check_device(device, "--device")
    check_folder(model, "--model")
    if out is not None and out.suffix != ".npz":
        raise ConfigError(f"--out {out}: an enrolment file ends in .npz")
    target = out if out is not None else enrolment_path(model, name)
    if target.exists() and not replace:
        raise ConfigError(f"{target}: already exists; enrol again with --replace to replace it")
    files, problems = find_audio_files(clips)
    if problems:  # the statistics come from exactly the clips named: none may be dropped
        raise EmoknnError(problems[0] + (f" (and {len(problems) - 1} more)"
                                         if len(problems) > 1 else ""))  # fmt: skip
    recognizer = load_recognizer(model, device)
    statistics = recognizer.speaker_statistics(files, name, kind, batch_size)
    save_enrolment(target, statistics)
    console.print(f"Enrolled {kind} {name}: statistics of {statistics.clips} unlabelled clips → "
                  f"{target}", highlight=False)  # fmt: skip


@dataclass
class StatisticsGroup:
    """Inputs predicted with one set of statistics (None: the model's features as they are)."""

    files: list[Path]
    statistics: object | None  # SpeakerStatistics


def read_speaker_csv(path: Path, column: str = SPEAKER_COLUMN) -> list[tuple[Path, str]]:
    """(audio path, speaker) of each row of a CSV with `path` and `column` columns; relative
    paths are taken from the CSV's folder. No other column is read (labels never are)."""
    if not path.is_file():
        raise ConfigError(f"--speakers {path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            missing = [name for name in (PATH_COLUMN, column) if name not in fields]
            if missing:
                raise ConfigError(f"{path}: needs the columns {PATH_COLUMN!r} and {column!r}; "
                                  f"missing {', '.join(map(repr, missing))}")  # fmt: skip
            rows = []
            for number, row in enumerate(reader, start=2):
                audio, speaker = (row.get(PATH_COLUMN) or "").strip(), (row.get(column) or "")
                if not audio or not speaker.strip():
                    raise ConfigError(f"{path}: row {number} has no {PATH_COLUMN} or {column}")
                audio_path = Path(audio)
                rows.append((audio_path if audio_path.is_absolute() else path.parent / audio_path,
                             speaker.strip()))  # fmt: skip
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path}: not a readable CSV ({error})") from None
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def statistics_groups(
    recognizer,
    inputs: list[Path],
    speaker: str | None,
    enrolment: Path | None,
    speakers_csv: Path | None,
    speaker_column: str,
    domain_stats: Path | None,
    batch_size: int,
) -> list[StatisticsGroup]:
    """The inputs of `emoknn predict`, grouped by the statistics they are predicted with.

    `--speakers CSV`: each speaker's clips are the statistics for each other (all speakers are
    checked against the model's minimum before any audio is read); `--speaker NAME` /
    `--enrolment FILE`: one enrolment for every input; `--domain-stats FOLDER`: statistics of the
    unlabelled recordings in FOLDER for every input. A model trained with speaker normalisation
    and given none of these is refused in one line (and any other model given one of them).
    """
    from emoknn.inputs import find_audio_files
    from emoknn.speaker_stats import check_clip_count

    options = {"--speaker": speaker, "--enrolment": enrolment, "--speakers": speakers_csv,
               "--domain-stats": domain_stats}  # fmt: skip
    given = [name for name, value in options.items() if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --speaker, --enrolment, --speakers, --domain-stats; "
                          f"got {' and '.join(given)}")  # fmt: skip
    if speakers_csv is None and not inputs:
        raise ConfigError("give audio files or folders to predict (or --speakers CSV)")
    if speakers_csv is not None and inputs:
        raise ConfigError("--speakers CSV lists the inputs itself; give no audio files beside it")
    # Refused before any audio is read: a speaker-normalised model with nothing to normalise by.
    recognizer.require_statistics(bool(given))
    if speakers_csv is None:
        files, problems = find_audio_files(inputs)
        for problem in problems:
            skipped(problem)
        statistics = None
        if speaker is not None:
            statistics = recognizer.enrolment(speaker)
        elif enrolment is not None:
            statistics = recognizer.enrolment(enrolment)
        elif domain_stats is not None:
            check_folder(domain_stats, "--domain-stats")
            domain_files, problems = find_audio_files([domain_stats])
            if problems:
                raise EmoknnError(problems[0])
            statistics = recognizer.speaker_statistics(domain_files, domain_stats.resolve().name,
                                                       "domain", batch_size)  # fmt: skip
        return [StatisticsGroup(files, statistics)]
    rows = read_speaker_csv(speakers_csv, speaker_column)
    by_speaker: dict[str, list[Path]] = {}
    for audio, name in rows:
        by_speaker.setdefault(name, []).append(audio)
    for name, files in by_speaker.items():
        check_clip_count(len(files), name, "speaker", recognizer.min_clips, f"{speakers_csv}: ")
    return [StatisticsGroup(files, recognizer.speaker_statistics(files, name, "speaker",
                                                                 batch_size))
            for name, files in by_speaker.items()]  # fmt: skip
