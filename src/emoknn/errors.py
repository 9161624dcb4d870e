"""The error types emoknn raises for problems a user can fix.

Every message names the file or value at fault and what was expected. The command line prints
these as one line with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmoknnError(Exception):
    """Base class of every user-facing emoknn error."""


class AudioError(EmoknnError, ValueError):
    """An audio file or array cannot be used: missing, unreadable, empty, too short, non-finite."""


class CorpusError(EmoknnError, ValueError):
    """A corpus directory or manifest does not have the expected layout or content."""


class FoldError(EmoknnError, ValueError):
    """Speaker-independent folds cannot be built, or a fold mixes speakers across splits."""


class ConfigError(EmoknnError, ValueError):
    """A parameter value is out of range or inconsistent with another.

    `setting` names the parameter when the message starts with it (the checks in `emoknn.checks`
    do this), so the command line can name its own option instead (`--workers`, not
    `num_workers`).
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting

    def renamed(self, name: str) -> ConfigError:
        """The same error with its leading setting name replaced by `name`."""
        message = str(self)
        if self.setting and message.startswith(self.setting):
            message = name + message[len(self.setting) :]
        return ConfigError(message, setting=name)


class FileFormatError(EmoknnError, ValueError):
    """A file emoknn reads back (JSON, arrays) is missing, incomplete or not what emoknn wrote."""


class ModelFolderError(FileFormatError):
    """A file of a model folder is missing, incomplete, or not what emoknn wrote."""


class SpeakerNormError(ConfigError):
    """Speaker statistics are missing for a speaker-normalised model (or given to another one),
    come from too few clips, or do not match the model's encoder features."""
