"""Audio in: any file soundfile can read → mono float32 at 16 kHz, and length helpers.

`load_audio` is the single entry point that turns a file into samples (whisper's `audio.py` is
the model): it decodes with soundfile (wav, flac, ogg/vorbis, mp3 with libsndfile ≥ 1.1, aiff, …),
averages channels, resamples with soxr, and checks the result. Every problem raises `AudioError`
naming the file and what is wrong.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from emoknn.errors import AudioError

SAMPLE_RATE = 16_000
# wav2vec 2.0's convolutional feature encoder has a receptive field of 400 samples (25 ms) at
# 16 kHz: a shorter input yields zero frames and the encoder fails.
MIN_SAMPLES = 400
DEFAULT_MAX_SECONDS = 7.5


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as a 1-D float32 array of mono samples at `sample_rate` Hz.

    Channels are averaged (not summed, so a mono file copied to two channels is unchanged).
    Resampling uses soxr's high-quality setting.

    Raises:
        AudioError: the file is missing, not audio, corrupt or truncated, has no samples, is
            shorter than 25 ms after resampling, or holds NaN/inf samples; `path` is not a path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise AudioError(f"expected an audio file path, got {type(path).__name__}")
    _check_rate(sample_rate, str(path), "sample_rate")
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    check_complete_wav(path)
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        samples, file_rate = _decode_container(path)
        return prepare_samples(samples, file_rate, sample_rate, source=str(path))
    try:
        samples, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: cannot decode audio ({decoder_reason(error)})") from error
    return prepare_samples(samples, file_rate, sample_rate, source=str(path))


UNKNOWN_WAV_LENGTHS = (0, 0xFFFFFFFF)  # streamed WAVs: the writer did not know the length


def check_complete_wav(path: str | os.PathLike) -> None:
    """Refuse a WAV file shorter than its header says (an interrupted copy or download):
    libsndfile would decode the part that is there as if it were the whole recording. Reads the
    RIFF chunk headers only; other formats, and WAVs streamed with an unknown length, pass."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            offset = 12
            for _ in range(64):  # chunks before "data": fmt, fact, LIST, ... (a handful)
                handle.seek(offset)
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return
                declared = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    available = size - offset - 8
                    if declared not in UNKNOWN_WAV_LENGTHS and declared > available:
                        raise AudioError(
                            f"{path}: truncated WAV: its header declares {declared} bytes of "
                            f"audio, the file holds {available} (an interrupted copy or "
                            "download?)"
                        )
                    return
                offset += 8 + declared + (declared & 1)
    except OSError as error:
        raise AudioError(f"{path}: cannot read the audio file ({error.strerror})") from error


# Video and AAC containers (MELD's clips are mp4): their first audio stream is decoded with PyAV,
# which bundles FFmpeg's decoders (`pip install av`, or emoknn[video]).
CONTAINER_SUFFIXES = (".mp4", ".m4a", ".aac", ".mkv", ".webm", ".mov", ".avi")


def _import_av(path: Path):  # -> the av module
    try:
        import av
    except ImportError:
        raise AudioError(
            f"{path}: decoding {path.suffix} needs PyAV; install it with `pip install av` "
            "(or emoknn[video])"
        ) from None
    return av


def _container_duration(path: Path) -> float:
    """Seconds of the first audio stream, from the container's header where it says."""
    av = _import_av(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: has no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise AudioError(f"{path}: cannot read audio header ({error})") from error
    samples, rate = _decode_container(path)
    return samples.shape[0] / rate


def _decode_container(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a video/AAC container → ((T, channels) float32, rate)."""
    av = _import_av(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            resampler = None
            blocks = []
            for frame in container.decode(stream):
                if resampler is None:  # planar float keeps every channel: (channels, samples)
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
                for out in resampler.resample(frame):
                    blocks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.resample(None):
                    blocks.append(out.to_ndarray())
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise AudioError(f"{path}: cannot decode audio ({error})") from error
    if not blocks:
        raise AudioError(f"{path}: audio has no samples")
    samples = np.concatenate(blocks, axis=1).T  # (channels, T) -> (T, channels)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


# PCM integer dtypes → (offset, scale): float = (pcm − offset) / scale. Wider integers (int64,
# uint16, ...) are not a PCM format a decoder produces: refused rather than guessed.
PCM_SCALE = {
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2147483648.0),
    np.dtype(np.uint8): (128.0, 128.0),
}


def _check_rate(rate: object, source: str, name: str) -> int:
    """A sample rate: a positive whole number of Hz (16000, or 44100.0)."""
    whole = (
        isinstance(rate, numbers.Real) and not isinstance(rate, bool) and float(rate).is_integer()
    )
    if not whole or rate <= 0:
        raise AudioError(f"{source}: {name} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def decoder_reason(error: Exception) -> str:
    """What the decoder saw ("Format not recognised", ...), without the path it was given: the
    caller names the file (a server names the client's file, never its own temporary path)."""
    return getattr(error, "error_string", None) or str(error)


def prepare_samples(
    samples: np.ndarray,
    input_rate: int,
    sample_rate: int = SAMPLE_RATE,
    source: str = "<array>",
) -> np.ndarray:
    """Turn an array of shape (T,) or (T, channels) at `input_rate` into checked mono float32.

    This is `load_audio` without the file: the prediction API uses it for arrays users pass in.
    """
    input_rate = _check_rate(input_rate, source, "input_rate")
    sample_rate = _check_rate(sample_rate, source, "sample_rate")
    if isinstance(samples, np.generic) or np.ndim(samples) == 0:
        raise AudioError(f"{source}: got a scalar; expected an array of samples of shape (T,)")
    try:
        samples = np.asarray(samples)
    except ValueError as error:  # ragged nested lists
        raise AudioError(f"{source}: not an array of samples ({error})") from None
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise AudioError(
            f"{source}: expected samples of shape (T,) or (T, channels), got {samples.shape}"
        )
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"{source}: audio has no samples")
    if samples.shape[1] > samples.shape[0]:
        raise AudioError(
            f"{source}: shape {samples.shape} has more channels than samples; expected "
            "(T, channels) — for a channels-first array pass array.T"
        )
    if samples.dtype in PCM_SCALE:
        # PCM integers: full scale maps to ±1.0 (int16 32767 -> 0.99997; uint8 is offset by 128).
        offset, scale = PCM_SCALE[samples.dtype]
        samples = (samples.astype(np.float32) - offset) / scale
    elif samples.dtype == np.bool_ or not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(
            f"{source}: samples of dtype {samples.dtype} are not audio; expected floats in "
            "[-1, 1], or int8/int16/int32/uint8 PCM"
        )
    if not np.isfinite(samples).all():
        raise AudioError(f"{source}: audio contains NaN or infinite samples")
    mono = samples.astype(np.float32).mean(axis=1)  # (T, C) -> (T,)
    if input_rate != sample_rate:
        mono = soxr.resample(mono, input_rate, sample_rate, quality="HQ").astype(np.float32)
    if mono.shape[0] < MIN_SAMPLES * sample_rate // SAMPLE_RATE:
        duration_ms = 1000 * mono.shape[0] / sample_rate
        raise AudioError(
            f"{source}: audio is {duration_ms:.1f} ms long, shorter than the encoder's 25 ms "
            "receptive field"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration of an audio file in seconds, from its header (no decoding; containers such as
    mp4 are decoded)."""
    if Path(path).suffix.lower() in CONTAINER_SUFFIXES:
        return _container_duration(Path(path))
    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot read audio header ({decoder_reason(error)})") from error


def max_samples(max_seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of samples in `max_seconds` at `sample_rate`."""
    if max_seconds <= 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds}")
    return round(max_seconds * sample_rate)


def random_crop(samples: np.ndarray, max_length: int, rng: np.random.Generator) -> np.ndarray:
    """Training crop: a random window of `max_length` samples if longer, else unchanged.

    Short clips are not padded here: the collate function pads a batch to its own longest item and
    passes an attention mask, so padding never reaches the pooled embedding.
    """
    if samples.shape[0] <= max_length:
        return samples
    start = int(rng.integers(0, samples.shape[0] - max_length + 1))
    return samples[start : start + max_length]


def center_crop(samples: np.ndarray, max_length: int) -> np.ndarray:
    """Evaluation crop: the centred window of `max_length` samples (deterministic)."""
    if samples.shape[0] <= max_length:
        return samples
    start = (samples.shape[0] - max_length) // 2
    return samples[start : start + max_length]


def pad_to(samples: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad at the end to `length` samples (a longer input is returned unchanged)."""
    if samples.shape[0] >= length:
        return samples
    return np.pad(samples, (0, length - samples.shape[0]))


def stream_audio(
    path: str | os.PathLike, block_seconds: float = 30.0, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Yield a file as consecutive mono float32 blocks at `sample_rate`, decoding and resampling
    a block at a time (soxr's streaming resampler), so memory stays flat on hour-long files.

    Raises AudioError as `load_audio` does (missing, undecodable, empty, non-finite).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() in CONTAINER_SUFFIXES:  # decoded whole (clips, not hour-long files)
        samples = load_audio(path, sample_rate)
        step = max(1, round(block_seconds * sample_rate))
        for start in range(0, samples.shape[0], step):
            yield samples[start : start + step]
        return
    check_complete_wav(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode audio ({decoder_reason(error)})") from error
    if info.frames == 0:
        raise AudioError(f"{path}: audio has no samples")
    resampler = None
    if info.samplerate != sample_rate:
        resampler = soxr.ResampleStream(
            info.samplerate, sample_rate, 1, dtype="float32", quality="HQ"
        )
    block_frames = max(1, round(block_seconds * info.samplerate))
    try:
        blocks = sf.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True)
        for block in blocks:
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: audio contains NaN or infinite samples")
            mono = block.mean(axis=1)
            if resampler is not None:
                mono = resampler.resample_chunk(mono)
            if mono.size:
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode audio ({decoder_reason(error)})") from error
