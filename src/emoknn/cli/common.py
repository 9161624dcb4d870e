"""What every command module of the command line shares: the consoles, the one-line reporting of
skipped inputs, and the checks of options that several commands take (training settings, output
folders, corpus and folds).

Console output never interprets rich markup or emoji codes: file and folder names, labels and
error messages are user text and are printed exactly as they are (`take[`, `[bold]x.wav`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.text import Text

from emoknn.checks import check_choice
from emoknn.errors import ConfigError

# soft_wrap: long lines (paths) wrap in the terminal, never mid-path. markup and emoji off: what
# is printed is user text (names of files, folders, labels; messages quoting them); styles are
# given explicitly (`style=`, `Text.assemble`), never by [tags] inside strings.
console = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
error_console = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def skipped(message: str) -> None:
    error_console.print(Text.assemble(("skipped:", "yellow"), " ", message))


# Training settings whose option is not `--` + the setting's name with dashes.
SETTING_OPTIONS = {
    "contrastive_weight": "--lambda",
    "max_epochs": "--epochs",
    "learning_rate": "--lr",
    "tune_learning_rate": "--tune-lr",
    "early_stopping_patience": "--early-stopping",
    "num_workers": "--workers",
    "progress_bar": "--progress",
}


def option_of(setting: str) -> str:
    return SETTING_OPTIONS.get(setting, "--" + setting.replace("_", "-"))


def train_config(preset: str, **overrides):
    """`make_config`, checked against this machine; errors name the command-line option."""
    from emoknn.config import PRESETS, check_hardware, make_config

    check_choice(preset, "--preset", PRESETS)
    try:
        config = make_config(preset, **overrides)
        check_hardware(config)
    except ConfigError as error:
        if error.setting is None:
            raise
        raise error.renamed(option_of(error.setting)) from None
    return config


def check_encoder(config) -> None:
    """A pretrained encoder is found (local folder, HF cache or reachable Hub) before any work."""
    from emoknn.sources import check_encoder_source

    check_encoder_source(config.encoder)


def check_output_folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a folder", setting=option)


def check_folder(path: Path | None, option: str) -> None:
    if path is not None and not path.is_dir():
        what = "not a folder" if path.exists() else "folder not found"
        raise ConfigError(f"{option} {path}: {what}", setting=option)


def label_map_setting(label_map: str) -> str:
    """--label-map as a run records it: default, four, or the JSON file's absolute path."""
    from emoknn.corpora import LABEL_MAP_CHOICES

    if label_map in LABEL_MAP_CHOICES:
        return label_map
    path = Path(label_map)
    if not path.is_file():
        raise ConfigError(
            f"--label-map {label_map!r}: expected default, four, or a JSON file; no such file",
            setting="--label-map",
        )
    return str(path.resolve())


def label_map_info(label_map: str) -> dict:
    """What a run records about --label-map: the map by content with its hash, not its path
    (`emoknn.corpora.label_map.label_map_record`)."""
    from emoknn.corpora import label_map_record

    return label_map_record(label_map_setting(label_map))


def check_fold_ratings(task: str, folds) -> None:
    """For a dimensional task, every fold's ratings checked before any fold trains (a cache
    filled, a baseline fitted): each utterance rated (train, validation and test alike), and no
    training split whose ratings are all equal."""
    from emoknn.attributes import attribute_matrix, attribute_statistics, rated_attributes

    if task == "categorical":
        return
    everyone = list({u.id: u for f in folds for u in f.train + f.val + f.test}.values())
    attributes = rated_attributes(everyone, task)
    attribute_matrix(everyone, attributes)
    for fold in folds:
        try:
            attribute_statistics(fold.train, attributes)
        except ConfigError as error:
            raise ConfigError(f"fold {fold.name}: {error}") from None


def load_folds(
    corpus: Path, kind: str, scheme: str, folds: str | None, label_map: str = "default"
):
    """The corpus's utterances and the selected folds, every option checked first."""
    from emoknn.config import check_trainable
    from emoknn.corpora import CORPUS_KINDS, check_distinct_audio, load_corpus
    from emoknn.folds import SCHEMES, select_folds, speaker_folds

    check_choice(kind, "--kind", CORPUS_KINDS)
    check_choice(scheme, "--scheme", SCHEMES)
    utterances = load_corpus(corpus, kind, label_map=label_map_setting(label_map))
    check_distinct_audio(utterances, str(corpus))  # byte copies too, before any fold is made
    chosen = select_folds(speaker_folds(utterances, scheme), folds)
    labels = sorted({u.label for u in utterances})
    for fold in chosen:
        check_trainable(fold.train, labels)
    return utterances, chosen


class TidyHelpCommand(typer.core.TyperCommand):
    """A command whose help reads like a Unix tool's: arguments as NAME (NAME... when repeated,
    [NAME] when optional) rather than `{name}` with a Python type (`<list[Path]>`), and on/off
    flags without a `<bool>` value they do not take."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.__class__ = _TidyArgument
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # shown as nothing: a flag takes no value
        return params


class _TidyArgument(typer.core.TyperArgument):
    def _name(self) -> str:
        return (self.metavar or self.name or "").upper()

    def _rich_display_name(self) -> str:
        return self._name() + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self._name() if self.required else f"[{self._name()}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name and the help say what it is


def tidy_help(app: typer.Typer) -> None:
    """Give every command of `app` (and of its groups) `TidyHelpCommand`'s help."""
    for command in app.registered_commands:
        if command.cls in (None, typer.core.TyperCommand):
            command.cls = TidyHelpCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            tidy_help(group.typer_instance)
