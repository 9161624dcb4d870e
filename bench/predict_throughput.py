"""Prediction throughput and memory, side by side with the raw encoder and transformers' pipeline.

    python bench/predict_throughput.py [--sizes tiny,base] [--clips 200] [--base-clips 48]

For each encoder size (random weights: speed does not depend on them), on the same clips with an
IEMOCAP-like length spread (0.5–15 s, mean ≈ 4.5 s; clips over 7.5 s are cut into 7.5 s windows
for every method alike), these run in interleaved rounds (every method once per round, in a
shuffled order); each speed-up is the median over rounds of a ratio of two times taken in the same
round, so that a slow spell of this shared machine hits both sides of it:

- emoknn predict                 `EmotionRecognizer.predict(paths)`: decoding, batching, model,
                                 kNN interpolation; PyTorch fp32 (the default)
- emoknn predict, bf16           the same with `precision="bf16"` (autocast)
- emoknn predict, ONNX fp32/int8 `OnnxEmotionRecognizer` on an `emoknn export` of the same model
- raw encoder, sorted batches    the bare HF encoder forward on the same windows, optimally
                                 length-sorted in batches, audio already in memory
- raw encoder, one at a time     the same with no padding at all (faster for GroupNorm encoders
                                 on a CPU); "the limit" is the faster of the two raw rows
- pipeline, fp32 / bf16          `transformers.pipeline("audio-classification")` with a same-size
                                 Wav2Vec2ForSequenceClassification, given the same windows (what
                                 users run today), and the same with the model cast to bf16

The bf16 and int8 rows also get their agreement with the fp32 predictions (same label, largest
probability difference). With random weights this shows numerical drift, not accuracy.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emoknn.audio import load_audio
from emoknn.corpora.synthetic import _make_speakers, synthesize_utterance
from emoknn.data import pad_batch
from emoknn.export import OnnxEmotionRecognizer, onnx_session, write_int8, write_onnx
from emoknn.knn import Datastore, KnnSettings
from emoknn.model import EmotionModel, ModelConfig, tiny_encoder_config
from emoknn.predict import EmotionRecognizer, Prediction
from emoknn.segments import window_segments

BASE_CONFIG = {"model_type": "wav2vec2"}  # transformers' Wav2Vec2Config defaults = wav2vec2-base
OURS = "emoknn predict"
RAW_BATCHED, RAW_SINGLE = "raw encoder, sorted batches", "raw encoder, one at a time"
PIPELINE = "pipeline, fp32"


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
        rng.standard_normal((4400, model.embedding_size)).astype(np.float32),
        rng.integers(0, 4, 4400),
        model.labels,
        [str(i) for i in range(4400)],
        "b",
    )
    settings = KnnSettings(k=16, alpha=0.5, temperature=1.0, score=0.0, criterion="ua")
    return EmotionRecognizer(model, store, settings, max_seconds=7.5, device="cpu")


def onnx_recognizers(recognizer: EmotionRecognizer, folder: Path) -> dict[str, EmotionRecognizer]:
    """The same model exported as `emoknn export` does, in fp32 and int8, with the same kNN."""
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    write_onnx(recognizer.model, fp32)
    write_int8(fp32, int8)
    make = lambda path: OnnxEmotionRecognizer(  # noqa: E731
        onnx_session(path),
        recognizer.labels,
        recognizer.store,
        recognizer.knn_settings,
        recognizer.max_seconds,
    )
    return {"emoknn predict, ONNX fp32": make(fp32), "emoknn predict, ONNX int8": make(int8)}


@torch.inference_mode()
def raw_encoder(encoder, windows: list[np.ndarray], batch_size: int) -> None:
    order = np.argsort([len(w) for w in windows])
    group_norm = getattr(encoder.config, "feat_extract_norm", "layer") == "group"
    for start in range(0, len(windows), batch_size):
        rows = order[start : start + batch_size]
        waveforms, lengths = pad_batch([windows[i] for i in rows])
        mask = torch.arange(waveforms.shape[1])[None] < lengths[:, None]
        # As transformers documents: no attention mask for GroupNorm models, only zero padding.
        encoder(waveforms, attention_mask=None if group_norm or len(rows) == 1 else mask.long())


def hf_pipeline(encoder_config: dict, dtype: torch.dtype = torch.float32):
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
    model = Wav2Vec2ForSequenceClassification(config).eval().to(dtype)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    )
    return pipeline("audio-classification", model=model, feature_extractor=extractor, device=-1)


def interleaved_seconds(methods: dict[str, Callable], rounds: int) -> dict[str, list[float]]:
    """Wall times of each method in each of `rounds` rounds, after one warm-up round (kernel
    set-up for every shape). A round runs every method once, in an order shuffled with a fixed
    seed, so that no method always follows the same one."""
    names = list(methods)
    for name in names:
        methods[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for index in rng.permutation(len(names)):
            start = time.perf_counter()
            methods[names[index]]()
            times[names[index]].append(time.perf_counter() - start)
    return times


def speedups(times: dict[str, list[float]], reference: Callable[[int], float]) -> dict[str, float]:
    """Per method, the median over rounds of reference time / method time, both from the same
    round: a slow spell of the machine slows both sides of each ratio."""
    return {
        name: float(np.median([reference(r) / t for r, t in enumerate(values)]))
        for name, values in times.items()
    }


def agreement(reference: list[Prediction], other: list[Prediction]) -> dict[str, float]:
    """Share of inputs with the same label, and the largest difference of a final probability."""
    same = [a.label == b.label for a, b in zip(reference, other, strict=True)]
    difference = max(
        abs(a.probabilities[label] - b.probabilities[label])
        for a, b in zip(reference, other, strict=True)
        for label in a.probabilities
    )
    return {"same_label": float(np.mean(same)), "max_probability_difference": float(difference)}


def throughput(size: str, paths: list[Path], batch_size: int, rounds: int, folder: Path) -> dict:
    encoder_config = tiny_encoder_config() if size == "tiny" else BASE_CONFIG
    recognizer = build_recognizer(encoder_config)
    windows = windows_of(paths, 120000)
    audio_seconds = sum(len(w) for w in windows) / 16000
    recognizers = {
        OURS: recognizer,
        "emoknn predict, bf16": EmotionRecognizer(
            recognizer.model, recognizer.store, recognizer.knn_settings, recognizer.max_seconds,
            precision="bf16"),
        **onnx_recognizers(recognizer, folder),
    }  # fmt: skip
    outputs: dict[str, list[Prediction]] = {}

    def predict_with(name: str) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = recognizers[name].predict(paths, batch_size=batch_size)

        return run

    classify = hf_pipeline(encoder_config)
    classify_bf16 = hf_pipeline(encoder_config, torch.bfloat16)
    encoder = recognizer.model.encoder
    methods = {name: predict_with(name) for name in recognizers}
    methods |= {
        RAW_BATCHED: lambda: raw_encoder(encoder, windows, batch_size),
        RAW_SINGLE: lambda: raw_encoder(encoder, windows, 1),
        PIPELINE: lambda: classify(windows),
        "pipeline, bf16": lambda: classify_bf16(windows),
    }
    times = interleaved_seconds(methods, rounds)
    limit = lambda r: min(times[RAW_BATCHED][r], times[RAW_SINGLE][r])  # noqa: E731
    return {
        "size": size,
        "clips": len(paths),
        "windows": len(windows),
        "audio_seconds": audio_seconds,
        "timings": {name: float(np.median(values)) for name, values in times.items()},
        "seconds_per_round": times,
        "vs_limit": speedups(times, limit),
        "vs_pipeline": speedups(times, lambda r: times[PIPELINE][r]),
        "rounds": rounds,
        "agreement_with_fp32": {
            name: agreement(outputs[OURS], outputs[name]) for name in recognizers if name != OURS
        },
    }


def print_throughput(result: dict) -> None:
    seconds, clips, timings = result["audio_seconds"], result["clips"], result["timings"]
    vs_limit, vs_pipeline = result["vs_limit"], result["vs_pipeline"]
    print(
        f"\n## {result['size']}: {clips} clips, {result['windows']} windows, {seconds:.0f} s of "
        f"audio; {result['rounds']} interleaved rounds after a warm-up round"
    )
    print("(utt/s and RTF: median time; vs: median over rounds of the same-round time ratio)")
    print(f"{'method':>30}  {'utt/s':>7}  {'RTF':>7}  {'vs limit':>8}  {'vs pipeline':>11}")
    for method, elapsed in timings.items():
        print(
            f"{method:>30}  {clips / elapsed:7.1f}  {elapsed / seconds:7.4f}  "
            f"{vs_limit[method]:7.2f}x  {vs_pipeline[method]:10.2f}x"
        )
    for name, agreed in result["agreement_with_fp32"].items():
        print(
            f"{name}: same label as fp32 on {100 * agreed['same_label']:.0f}% of clips, "
            f"max |Δ probability| {agreed['max_probability_difference']:.4f}"
        )
    fastest = max((vs_pipeline[name], name) for name in timings if name.startswith(OURS))[1]
    print(
        f"emoknn predict (fp32): {vs_limit[OURS]:.2f}x the raw-encoder limit (target ≥ 0.9x), "
        f"{vs_pipeline[OURS]:.2f}x the fp32 pipeline (target ≥ 1.5x); fastest emoknn path "
        f"({fastest}): {vs_pipeline[fastest]:.2f}x the fp32 pipeline"
    )


MEMORY_PROBE = """
import sys, time, torch
torch.manual_seed(0)

def peak_mb():  # VmHWM: this process's peak RSS; unlike ru_maxrss it does not survive exec
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

from emoknn.model import EmotionModel, ModelConfig
from emoknn.predict import EmotionRecognizer

recognizer = EmotionRecognizer(EmotionModel(ModelConfig(encoder="tiny")), max_seconds=7.5)
recognizer.predict(sys.argv[2])  # a 20-minute file first: a full pool, full batches
before = peak_mb()
start = time.perf_counter()
result = recognizer.predict(sys.argv[1])[0]
print(before, peak_mb(), len(result.segments), time.perf_counter() - start)
"""


def peak_rss_of_long_file(minutes: float, folder: Path) -> dict:
    """Peak RSS of predicting a `minutes`-long file in a fresh process, against the peak after a
    20-minute file: long enough to fill the prediction pool (8 batches of 16 windows of 7.5 s =
    16 minutes), so the long file runs the same batches, only more of them."""
    rng = np.random.default_rng(0)
    speaker = _make_speakers(1, rng)[0]
    chunk = synthesize_utterance(speaker, "neutral", 60.0, rng)
    short, path = folder / "twenty_minutes.wav", folder / "long.wav"
    sf.write(short, np.tile(chunk, 20), 16000, subtype="PCM_16")
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as handle:
        for _ in range(int(minutes)):
            handle.write(chunk)
    output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(short)],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return {
        "minutes": minutes,
        "file_mb": path.stat().st_size / 2**20,
        "decoded_whole_mb": minutes * 60 * 16000 * 4 / 2**20,
        "rss_after_twenty_minutes_mb": float(output[0]),
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
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds, tiny")
    parser.add_argument("--base-rounds", type=int, default=3, help="timed rounds, base size")
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
            tiny = size == "tiny"
            paths = all_paths[: args.clips if tiny else args.base_clips]
            (folder / size).mkdir()
            rounds = args.rounds if tiny else args.base_rounds
            result = throughput(size, paths, args.batch_size, rounds, folder / size)
            figures["throughput"].append(result)
            print_throughput(result)
        memory = peak_rss_of_long_file(args.minutes, folder)
        figures["memory"] = memory
        print(
            f"\n## memory: predict on a {memory['minutes']:.0f}-minute file "
            f"({memory['file_mb']:.0f} MB wav, "
            f"{memory['decoded_whole_mb']:.0f} MB if decoded whole)"
        )
        print(
            f"peak RSS {memory['rss_peak_mb']:.0f} MB, against "
            f"{memory['rss_after_twenty_minutes_mb']:.0f} MB after a 20-minute file; "
            f"{memory['segments']} segments in {memory['seconds']:.0f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
