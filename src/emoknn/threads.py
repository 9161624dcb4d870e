"""Thread counts for small dense work: one BLAS thread for scikit-learn fits.

The encoder probe and the classical baseline fit logistic regressions on a few hundred rows of a
few hundred features. Each BLAS call is then microseconds of work, and with a BLAS thread per core
(numpy's OpenBLAS and torch's, side by side in one process) the threads' hand-offs cost far more
than the arithmetic, worst on a small or busy machine. Measured on this project's 2-core CPU, one
fold of the encoder probe on whisper-base features (7 layers × 5 values of C, 640 × 512 rows):
39.4 s with the default threads, 4.6 s with one, the same fitted models (`bench/probe_speed.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS and OpenMP pools (numpy, scipy, scikit-learn) to one thread within the block;
    the previous limits come back on exit. Usable as a decorator too."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
