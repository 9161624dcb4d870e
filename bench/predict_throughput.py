"""Prediction throughput and memory, side by side with the raw encoder and transformers' pipeline.

    python bench/predict_throughput.py [--sizes tiny,base] [--clips 200] [--base-clips 48]

For each encoder size (random weights: speed does not depend on them), on the same clips with an
IEMOCAP-like length spread (0.5–15 s, mean ≈ 4.5 s; clips over 7.5 s are cut into 7.5 s windows
for every method alike):

- emoknn      `EmotionRecognizer.predict(paths)`: decoding, batching, model, kNN interpolation
- raw encoder the bare HF encoder forward on the same windows, optimally length-sorted in batches,
              audio already in memory — the limit
- pipeline    `transformers.pipeline("audio-classification")` with a same-size
              Wav2Vec2ForSequenceClassification, given the same windows (what users run today)

Then peak RSS of `emoknn predict` on a 60-minute file (in a subprocess), against the size of that
file decoded whole.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emoknn.audio import load_audio
from emoknn.corpora.synthetic import _make_speakers, synthesize_utterance
from emoknn.data import pad_batch
from emoknn.knn import Datastore, KnnSettings
from emoknn.model import EmotionModel, ModelConfig, tiny_encoder_config
from emoknn.predict import EmotionRecognizer, window_segments

BASE_CONFIG = {"model_type": "wav2vec2"}  # transformers' Wav2Vec2Config defaults = wav2vec2-base


def make_clips(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Clips with lengths from a gamma distribution clipped to 0.5–15 s (mean ≈ 4.5 s)."""
    rng = np.random.default_rng(seed)
    speaker = _make_speakers(1, rng)[0]
    lengths = np.clip(rng.gamma(2.2, 2.05, count), 0.5, 15.0)
    paths = []
    for i, seconds in enumerate(lengths):
        path = folder / f"clip{i:03d}.wav"
        label = ("angry", "happy", "neutral", "sad")[i % 4]
        sf.write(path, synthesize_utterance(speaker, label, float(seconds), rng), 16000)
        paths.append(path)
    return paths


def windows_of(paths: list[Path], window: int) -> list[np.ndarray]:
    out = []
    for path in paths:
        out += [w for _, w in window_segments(iter([load_audio(path)]), window, window)]
    return out


def build_recognizer(encoder_config: dict) -> EmotionRecognizer:
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny", encoder_config=dict(encoder_config))).eval()
    rng = np.random.default_rng(0)  # a datastore of the size of IEMOCAP's training folds
    store = Datastore(
        rng.standard_normal((4400, model.hidden_size)).astype(np.float32),
        rng.integers(0, 4, 4400),
        model.labels,
        [str(i) for i in range(4400)],
        "b",
    )
    settings = KnnSettings(k=16, alpha=0.5, temperature=1.0, score=0.0, criterion="ua")
    return EmotionRecognizer(model, store, settings, max_seconds=7.5, device="cpu")


@torch.inference_mode()
def raw_encoder(encoder, windows: list[np.ndarray], batch_size: int) -> None:
    order = np.argsort([len(w) for w in windows])
    for start in range(0, len(windows), batch_size):
        rows = order[start : start + batch_size]
        waveforms, lengths = pad_batch([windows[i] for i in rows])
        mask = torch.arange(waveforms.shape[1])[None] < lengths[:, None]
        group_norm = getattr(encoder.config, "feat_extract_norm", "layer") == "group"
        # As transformers documents: no attention mask for GroupNorm models, only zero padding.
        encoder(waveforms, attention_mask=None if group_norm else mask.long())


def hf_pipeline(encoder_config: dict):
    from transformers import (
        AutoConfig,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
        pipeline,
    )

    settings = dict(encoder_config)
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, num_labels=4, **settings)
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    )
    return pipeline("audio-classification", model=model, feature_extractor=extractor, device=-1)


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `run()` after one full warm-up run (kernel set-up for every shape)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def throughput(size: str, paths: list[Path], batch_size: int, repeats: int) -> dict:
    encoder_config = tiny_encoder_config() if size == "tiny" else BASE_CONFIG
    recognizer = build_recognizer(encoder_config)
    windows = windows_of(paths, 120000)
    audio_seconds = sum(len(w) for w in windows) / 16000
    classify = hf_pipeline(encoder_config)
    timings = {
        "emoknn predict": median_seconds(lambda: recognizer.predict(paths, batch_size=batch_size),
                                         repeats),
        "raw encoder (sorted batches)": median_seconds(
            lambda: raw_encoder(recognizer.model.encoder, windows, batch_size), repeats),
        "transformers pipeline": median_seconds(lambda: classify(windows), repeats),
    }  # fmt: skip
    return {
        "size": size,
        "clips": len(paths),
        "windows": len(windows),
        "audio_seconds": audio_seconds,
        "timings": timings,
        "repeats": repeats,
    }


MEMORY_PROBE = """
import sys, time, torch
torch.manual_seed(0)

def peak_mb():  # VmHWM: this process's peak RSS; unlike ru_maxrss it does not survive exec
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

from emoknn.model import EmotionModel, ModelConfig
from emoknn.predict import EmotionRecognizer

recognizer = EmotionRecognizer(EmotionModel(ModelConfig(encoder="tiny")), max_seconds=7.5)
recognizer.predict(sys.argv[2])  # a 10-minute file first: a full pool, full batches
before = peak_mb()
start = time.perf_counter()
result = recognizer.predict(sys.argv[1])[0]
print(before, peak_mb(), len(result.segments), time.perf_counter() - start)
"""


def peak_rss_of_long_file(minutes: float, folder: Path) -> dict:
    """Peak RSS of predicting a `minutes`-long file in a fresh process, against the peak after a
    10-minute file (long enough to fill the prediction pool: the same batches, only shorter)."""
    rng = np.random.default_rng(0)
    speaker = _make_speakers(1, rng)[0]
    chunk = synthesize_utterance(speaker, "neutral", 60.0, rng)
    short, path = folder / "ten_minutes.wav", folder / "long.wav"
    sf.write(short, np.tile(chunk, 10), 16000, subtype="PCM_16")
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as handle:
        for _ in range(int(minutes)):
            handle.write(chunk)
    output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(short)],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return {
        "minutes": minutes,
        "file_mb": path.stat().st_size / 2**20,
        "decoded_whole_mb": minutes * 60 * 16000 * 4 / 2**20,
        "rss_after_ten_minutes_mb": float(output[0]),
        "rss_peak_mb": float(output[1]),
        "segments": int(output[2]),
        "seconds": float(output[3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--base-clips", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median), tiny")
    parser.add_argument("--base-repeats", type=int, default=1, help="timed runs, base size")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"# prediction throughput — {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d')}; random weights"
    )
    figures: dict = {"throughput": [], "memory": None}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        all_paths = make_clips(folder, max(args.clips, args.base_clips))
        for size in [s for s in args.sizes.split(",") if s]:
            paths = all_paths[: args.clips if size == "tiny" else args.base_clips]
            result = throughput(
                size, paths, args.batch_size, args.repeats if size == "tiny" else args.base_repeats
            )
            figures["throughput"].append(result)
            seconds = result["audio_seconds"]
            print(
                f"\n## {size}: {result['clips']} clips, {result['windows']} windows, "
                f"{seconds:.0f} s of audio; median of {result['repeats']} timed run(s) after a "
                "warm-up run"
            )
            print(f"{'method':>30}  {'utt/s':>7}  {'RTF':>7}  {'vs raw':>6}")
            raw = result["timings"]["raw encoder (sorted batches)"]
            for method, elapsed in result["timings"].items():
                print(
                    f"{method:>30}  {result['clips'] / elapsed:7.1f}  {elapsed / seconds:7.4f}  "
                    f"{raw / elapsed:5.2f}x"
                )
            ours = result["timings"]["emoknn predict"]
            pipe = result["timings"]["transformers pipeline"]
            print(
                f"emoknn: {raw / ours:.2f}x the raw encoder (target ≥ 0.9x), "
                f"{pipe / ours:.2f}x the pipeline (target ≥ 1.5x)"
            )
        memory = peak_rss_of_long_file(args.minutes, folder)
        figures["memory"] = memory
        print(
            f"\n## memory: predict on a {memory['minutes']:.0f}-minute file "
            f"({memory['file_mb']:.0f} MB wav, "
            f"{memory['decoded_whole_mb']:.0f} MB if decoded whole)"
        )
        print(
            f"peak RSS {memory['rss_peak_mb']:.0f} MB, against "
            f"{memory['rss_after_ten_minutes_mb']:.0f} MB after a 10-minute file; "
            f"{memory['segments']} segments in {memory['seconds']:.0f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
