"""Long audio cut into segments: speech levels, fixed windows, and energy-based voice activity.

`emoknn.predict` scores an input longer than the model's crop length segment by segment, cut here
from a stream of sample blocks (so memory does not grow with the file):

- `window_segments`: fixed windows of `window` samples every `hop` samples; a final piece shorter
  than MIN_SEGMENT_SECONDS is dropped unless it is all there is;
- `voice_segments`: runs of 30 ms frames louder than NO_SPEECH_DBFS, short gaps bridged, long
  speech cut into windows;
- `frame_levels_dbfs` / `speech_level_dbfs`: the level of each frame / the loudest frame (RMS with
  the frame's mean removed, so a constant offset is silence), which also decides `no_speech`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from emoknn.audio import MIN_SAMPLES, SAMPLE_RATE

SEGMENTATIONS = ("window", "vad")
# A final window shorter than this is dropped (unless it is all there is): too little to judge.
MIN_SEGMENT_SECONDS = 0.5
# Level below which a clip holds no speech: the loudest 30 ms frame's RMS, after removing the
# frame's mean (so a constant offset counts as silence), under -45 dBFS. The VAD uses the same.
NO_SPEECH_DBFS = -45.0
LEVEL_FLOOR_DBFS = -120.0  # digital silence is reported as this, not -inf (JSON has no -inf)
LEVEL_FRAME_SAMPLES = int(0.03 * SAMPLE_RATE)
MAX_WINDOW_SECONDS = 60.0  # longest segment scored in one forward pass


def frame_levels_dbfs(samples: np.ndarray, frame: int = LEVEL_FRAME_SAMPLES) -> np.ndarray:
    """Level of each whole frame: 20·log10(RMS of the frame minus its mean), floored at -120.

    Removing each frame's mean makes a constant (DC) signal silent, as it sounds.
    """
    usable = len(samples) // frame * frame
    frames = samples[:usable].reshape(-1, frame).astype(np.float64)  # (F, frame)
    ac = frames - frames.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(ac**2, axis=1))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), LEVEL_FLOOR_DBFS)


def speech_level_dbfs(samples: np.ndarray) -> float:
    """The loudest frame's level (dBFS); a clip shorter than one frame is one frame."""
    frame = min(LEVEL_FRAME_SAMPLES, len(samples))
    if frame == 0:
        return LEVEL_FLOOR_DBFS
    return float(frame_levels_dbfs(samples, frame).max())


def window_segments(blocks: Iterable[np.ndarray], window: int, hop: int
                    ) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
    """Fixed windows `(start_sample, samples)` over a stream of blocks; holds one window at most.

    The last window may be shorter; it is kept if at least MIN_SEGMENT_SECONDS long (or if it is
    the only one).
    """
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # sample index of buffer[0]
    emitted = False
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) >= window:
            yield offset, buffer[:window].copy()
            emitted = True
            buffer = buffer[hop:]
            offset += hop
    # The last full window ended at offset − hop + window; samples past it are not yet covered.
    uncovered = len(buffer) - (window - hop) if emitted else len(buffer)
    long_enough = len(buffer) >= max(MIN_SAMPLES, MIN_SEGMENT_SECONDS * SAMPLE_RATE)
    only_one = not emitted and len(buffer) >= MIN_SAMPLES
    if uncovered > 0 and (long_enough or only_one):
        yield offset, buffer.copy()


def voice_segments(
    blocks: Iterable[np.ndarray],
    window: int,
    hop: int,
    threshold_db: float = NO_SPEECH_DBFS,
    min_silence_seconds: float = 0.3,
    min_speech_seconds: float = 0.3,
) -> Iterator[tuple[int, np.ndarray]]:
    """Energy-based voice activity: runs of 30 ms frames above `threshold_db` dBFS (RMS of the
    frame minus its mean, `frame_levels_dbfs`), with gaps shorter than `min_silence_seconds`
    bridged; speech longer than `window` is cut into windows. `hop` is unused (segments do not
    overlap). Holds at most one segment in memory."""
    frame = LEVEL_FRAME_SAMPLES
    max_gap = round(min_silence_seconds * SAMPLE_RATE / frame)
    min_frames = max(1, round(min_speech_seconds * SAMPLE_RATE / frame))
    carry = np.zeros(0, dtype=np.float32)
    position = 0  # sample index of carry[0]
    speech: list[np.ndarray] = []
    speech_start = 0
    silent_frames = 0
    held_silence: list[np.ndarray] = []

    def finish() -> Iterator[tuple[int, np.ndarray]]:
        if len(speech) >= min_frames:
            samples = np.concatenate(speech)
            for start in range(0, len(samples), window):
                piece = samples[start : start + window]
                if len(piece) >= MIN_SAMPLES:
                    yield speech_start + start, piece

    for block in blocks:
        carry = np.concatenate([carry, block])
        usable = len(carry) // frame * frame
        frames = carry[:usable].reshape(-1, frame)
        loud = frame_levels_dbfs(carry[:usable], frame) > threshold_db
        for index, is_loud in enumerate(loud):
            start = position + index * frame
            if is_loud:
                if not speech:
                    speech_start = start
                else:
                    speech.extend(held_silence)
                held_silence.clear()
                silent_frames = 0
                speech.append(frames[index])
                if len(speech) * frame >= window:  # a full window of speech: emit now
                    yield from finish()
                    speech.clear()
            elif speech:
                silent_frames += 1
                held_silence.append(frames[index])
                if silent_frames > max_gap:
                    yield from finish()
                    speech.clear()
                    held_silence.clear()
        position += usable
        carry = carry[usable:]
    yield from finish()
