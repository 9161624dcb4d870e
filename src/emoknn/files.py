"""Writing files so that an interruption never leaves half of one: write beside, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emoknn.errors import ConfigError, FileFormatError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; when the block succeeds, rename it onto `path`.

    The rename is atomic, so readers (and a resumed run) see the old file or the new one, never a
    partial one. The temporary file is removed if the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporaries of `path` left by processes that were killed while writing it
    (SIGKILL runs no cleanup): `.NAME.PID.tmp` whose PID is no longer running."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _is_running(int(pid)):
            stale.unlink(missing_ok=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def check_writable_folder(folder: str | os.PathLike, what: str = "the output folder") -> Path:
    """Refuse, before any work, a folder that cannot be created or written: a file in its place
    or on its path, or a parent that refuses new files (read-only, no permission). The check
    writes and removes a probe file in the folder, or in its nearest existing parent."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: {what} is a file; expected a folder")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{folder}: cannot create {what} ({probe} is a file)")
    try:
        handle, name = tempfile.mkstemp(dir=probe, prefix=".emoknn-write-check-")
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        raise ConfigError(
            f"{folder}: cannot write {what} ({probe}: {error.strerror or error})"
        ) from error
    return folder


def give_default_permissions(path: str | os.PathLike) -> None:
    """The permissions a file created with open() would have (0666 less the umask): some
    writers (safetensors) create their files 0600, unreadable to the user's other accounts and
    services, unlike every other file of a model folder."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (OSError if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def read_json_object(path: str | os.PathLike, error: type[FileFormatError] = FileFormatError,
                     allow_nan: bool = True) -> dict[str, Any]:  # fmt: skip
    """The JSON object in `path`, or `error` with one line saying why not (missing, empty,
    truncated, nested too deeply, not an object; with `allow_nan` False, NaN or Infinity
    anywhere)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"{path}: cannot be read ({problem})") from problem
    if not text.strip():
        raise error(f"{path}: the file is empty")
    try:
        data = json.loads(text) if allow_nan else json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as problem:
        raise error(
            f"{path}: not valid JSON ({problem.msg} at line {problem.lineno}; truncated?)"
        ) from problem
    except RecursionError as problem:
        raise error(f"{path}: JSON nested too deeply to read") from problem
    except ValueError as problem:  # NaN / Infinity refused
        raise error(f"{path}: {problem} (a finite number is expected)") from problem
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_new_file(path: str | os.PathLike, what: str = "the output file") -> Path:
    """Refuse, before any work, a file destination that cannot be written new and whole: an
    existing file (emoknn never overwrites a file it was not asked to replace), a folder in its
    place, a file on its path, or a folder that refuses new files (read-only, a device, /sys)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: {what} is a folder; expected a new file name")
    if path.exists() or path.is_symlink():
        raise ConfigError(
            f"{path}: {what} exists; it is not overwritten (delete it or choose another name)"
        )
    try:
        check_writable_folder(path.parent, f"the folder of {what}")
    except ConfigError as error:
        raise ConfigError(f"{path}: cannot write {what} ({error})") from None
    return path
