"""Small validators shared by the Python API and the command line.

Each checks one value and raises `ConfigError` naming the setting, what was expected and what it
got, in one line: `batch_size must be an integer ≥ 1, got -1`. The command line passes its option
names (`--batch-size`) so the message names what the user typed; the API passes its argument
names. Checks run before any work starts, so a bad value never costs a training run.

Only the hardware checks (`check_device`, `check_accelerator`) import torch, and only when called.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from emoknn.errors import ConfigError


def _text(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _range_text(minimum: float | None, maximum: float | None, strict_minimum: bool) -> str:
    """`≥ 1`, `> 0`, `≤ 9`, `in [1, 9]` or `in (0, 9]`."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if strict_minimum else '['}{_text(minimum)}, {_text(maximum)}]"
    if minimum is not None:
        return f"{'>' if strict_minimum else '≥'} {_text(minimum)}"
    return f"≤ {_text(maximum)}" if maximum is not None else ""


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum]; bools and non-integral numbers are refused."""
    range_text = _range_text(minimum, maximum, strict_minimum=False)
    expected = f"an integer {range_text}".rstrip()
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if (
        not integral
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ConfigError(f"{name} must be {expected}, got {value!r}", setting=name)
    return int(value)


def check_number(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """`value` as a finite float within the range (`strict_minimum`: above `minimum`, not equal)."""
    range_text = _range_text(minimum, maximum, strict_minimum)
    expected = f"a finite number {range_text}".rstrip()
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    bad = not number or not math.isfinite(value)
    if not bad and minimum is not None:
        bad = value <= minimum if strict_minimum else value < minimum
    if not bad and maximum is not None:
        bad = value > maximum
    if bad:
        raise ConfigError(f"{name} must be {expected}, got {value!r}", setting=name)
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices` (compared exactly)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(choices)}; got {value!r}", setting=name
        )
    return value


def check_port(value: Any, name: str = "port") -> int:
    """A TCP port to listen on: 1–65535."""
    return check_int(value, name, 1, 65535)


def check_device(device: str | None, name: str = "device") -> str | None:
    """A torch device this machine has: `cpu`, `cuda`, `cuda:N` or `mps` (None: choose later).

    Said before a model is loaded, so a missing GPU is never blamed on the model file.
    """
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{name} must be cpu, cuda, cuda:N or mps; got {device!r}", setting=name
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{name} {device!r}: no CUDA GPU is available on this machine "
                "(torch.cuda.is_available() is False); use cpu",
                setting=name,
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"{name} {device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:"
                f"{count - 1})",
                setting=name,
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{name} 'mps': Apple MPS is not available here", setting=name)
    elif parsed.type != "cpu":
        raise ConfigError(f"{name} must be cpu, cuda, cuda:N or mps; got {device!r}", setting=name)
    return device


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def check_accelerator(accelerator: str, devices: int = 1, name: str = "accelerator") -> str:
    """An accelerator Lightning can use here, with enough devices for `devices`."""
    check_choice(accelerator, name, ACCELERATORS)
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{name} {accelerator!r}: no CUDA GPU is available on this machine; use cpu or "
                "auto",
                setting=name,
            )
        if devices > torch.cuda.device_count():
            raise ConfigError(
                f"{name} {accelerator!r} with {devices} devices: this machine has "
                f"{torch.cuda.device_count()} GPU(s)",
                setting=name,
            )
    if accelerator == "mps":
        check_device("mps", name)
    return accelerator
