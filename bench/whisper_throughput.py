"""Whisper-base: emoknn at each clip's own length against 30 s-padded Whisper, and a training step.

    python bench/whisper_throughput.py [--encoder DIR] [--clips 200] [--rounds 2]

Needs the real whisper-base in Hugging Face format (`../shared/tools/whisper-base` builds it;
default folder: $EMOKNN_WHISPER_BASE or ~/.cache/emoknn-dev/whisper-base). On the same clips as
bench/predict_throughput.py (lengths 0.5–15 s, mean ≈ 4.5 s; clips over 7.5 s are cut into 7.5 s
windows for every method alike), in interleaved rounds (every method once per round, shuffled with
a fixed seed; each ratio is the median over rounds of two times taken in the same round):

- emoknn predict                 `EmotionRecognizer.predict(paths)` on a whisper-base EmotionModel
                                 (decoding, batching, log-mel at each clip's own length, encoder,
                                 kNN interpolation over a 4,400-entry datastore), PyTorch fp32
- backbone, sorted batches       `WhisperBackbone` alone on the windows, in memory, length-sorted
                                 batches: the limit of the own-length approach
- pipeline (pads to 30 s)        `transformers.pipeline("audio-classification")` with a
                                 `WhisperForAudioClassification` holding whisper-base's encoder
                                 weights and `WhisperFeatureExtractor` (every clip padded to 30 s)
- bare encoder, 30 s inputs      HF `WhisperEncoder.forward` on the extractor's 30 s mel features
                                 (computed before timing), batches of `--batch-size`

The heads are random (speed does not depend on them), so only speed is compared. Then one real
fine-tuning step of whisper-base (the paper's batch: 12 originals + 12 views of 7.5 s; CE +
λ·SupCon, backward, SGD step; conv stem frozen), in a fresh process: seconds and peak RSS.
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
import torch

from emoknn.data import pad_batch
from emoknn.knn import Datastore, KnnSettings
from emoknn.model import EmotionModel, ModelConfig
from emoknn.predict import EmotionRecognizer
from predict_throughput import make_clips, speedups, windows_of

OURS = "emoknn predict"
BACKBONE = "backbone, sorted batches"
PIPELINE = "pipeline (pads to 30 s)"
BARE_30S = "bare encoder, 30 s inputs"
DEFAULT_ENCODER = os.environ.get("EMOKNN_WHISPER_BASE", "~/.cache/emoknn-dev/whisper-base")


def build_recognizer(encoder_dir: Path) -> EmotionRecognizer:
    torch.manual_seed(0)
    # Whisper's feature extractor does not normalise waveforms (emoknn's default for Whisper).
    config = ModelConfig(encoder=str(encoder_dir), normalize_waveforms=False)
    model = EmotionModel(config).eval()
    rng = np.random.default_rng(0)  # a datastore of the size of IEMOCAP's training folds
    store = Datastore(
        rng.standard_normal((4400, model.embedding_size)).astype(np.float32),
        rng.integers(0, 4, 4400), model.labels, [str(i) for i in range(4400)], "b",
    )  # fmt: skip
    settings = KnnSettings(k=16, alpha=0.5, temperature=1.0, score=0.0, criterion="ua")
    return EmotionRecognizer(model, store, settings, max_seconds=7.5, device="cpu")


def hf_pipeline(encoder_dir: Path):
    """What a user of transformers runs: audio classification with Whisper's encoder."""
    import transformers
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification, pipeline

    torch.manual_seed(0)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the decoder weights it skips, listed at length
    try:
        model, info = WhisperForAudioClassification.from_pretrained(
            encoder_dir, num_labels=4, key_mapping={r"^model\.encoder\.": "encoder."},
            output_loading_info=True,
        )  # fmt: skip
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if k.startswith("encoder.")]
    assert not missing, f"encoder weights not loaded: {missing[:3]}"
    extractor = WhisperFeatureExtractor.from_pretrained(encoder_dir)
    return pipeline("audio-classification", model=model.eval(), feature_extractor=extractor,
                    device=-1)  # fmt: skip


@torch.inference_mode()
def backbone_batches(model: EmotionModel, windows: list[np.ndarray], batch_size: int) -> None:
    order = np.argsort([len(w) for w in windows])
    for start in range(0, len(windows), batch_size):
        waveforms, lengths = pad_batch([windows[i] for i in order[start : start + batch_size]])
        model.encoder(waveforms, lengths)


@torch.inference_mode()
def bare_encoder_30s(encoder, features: torch.Tensor, batch_size: int) -> None:
    for start in range(0, len(features), batch_size):
        encoder(features[start : start + batch_size])


def interleaved(methods: dict[str, Callable[[list], None]], items: list, rounds: int,
                warmup_items: int = 3) -> dict[str, list[float]]:  # fmt: skip
    """Each method's wall time on `items` in each round, after a warm-up on a few items (a full
    warm-up round would double the cost of the 30 s methods); the order is shuffled per round."""
    names = list(methods)
    for name in names:
        methods[name](items[:warmup_items])
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for round_index in range(rounds):
        for index in rng.permutation(len(names)):
            start = time.perf_counter()
            methods[names[index]](items)
            times[names[index]].append(time.perf_counter() - start)
            print(f"  round {round_index + 1}: {names[index]} {times[names[index]][-1]:.1f} s",
                  flush=True)  # fmt: skip
    return times


def throughput(encoder_dir: Path, paths: list[Path], batch_size: int, rounds: int) -> dict:
    from transformers import WhisperFeatureExtractor

    recognizer = build_recognizer(encoder_dir)
    classify = hf_pipeline(encoder_dir)
    hf_encoder = classify.model.encoder
    per_path = [windows_of([path], 120000) for path in paths]  # the same cut for every method
    windows = [w for ws in per_path for w in ws]
    audio_seconds = sum(len(w) for w in windows) / 16000
    first = np.cumsum([0] + [len(ws) for ws in per_path])  # path i → windows first[i]:first[i+1]
    extractor = WhisperFeatureExtractor.from_pretrained(encoder_dir)
    features = torch.from_numpy(
        extractor(windows, sampling_rate=16000, return_tensors="np").input_features
    )  # (N, 80, 3000): every window padded to 30 s

    def windows_for(chosen: list[int]) -> list[int]:
        return [w for i in chosen for w in range(first[i], first[i + 1])]

    methods: dict[str, Callable[[list], None]] = {
        OURS: lambda chosen: recognizer.predict([paths[i] for i in chosen], batch_size=batch_size),
        BACKBONE: lambda chosen: backbone_batches(
            recognizer.model, [windows[w] for w in windows_for(chosen)], batch_size
        ),
        PIPELINE: lambda chosen: classify([windows[w] for w in windows_for(chosen)]),
        BARE_30S: lambda chosen: bare_encoder_30s(
            hf_encoder, features[windows_for(chosen)], batch_size
        ),
    }
    times = interleaved(methods, list(range(len(paths))), rounds)
    return {
        "clips": len(paths),
        "windows": len(windows),
        "audio_seconds": audio_seconds,
        "rounds": rounds,
        "batch_size": batch_size,
        "timings": {name: float(np.median(values)) for name, values in times.items()},
        "seconds_per_round": times,
        "vs_pipeline": speedups(times, lambda r: times[PIPELINE][r]),
        "vs_bare_30s": speedups(times, lambda r: times[BARE_30S][r]),
        "vs_backbone": speedups(times, lambda r: times[BACKBONE][r]),
    }


FINETUNE_PROBE = """
import sys, time, torch
from emoknn.losses import combined_loss
from emoknn.model import EmotionModel, ModelConfig

def peak_mb():  # VmHWM: this process's peak RSS
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

torch.manual_seed(0)
model = EmotionModel(ModelConfig(encoder=sys.argv[1], normalize_waveforms=False)).train()
parameters = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD(parameters, lr=1e-4, momentum=0.9)
waveforms = 0.1 * torch.randn(24, 120000)  # 12 originals + 12 views, 7.5 s each
lengths, labels = torch.full((24,), 120000), torch.arange(24) % 4
loaded = peak_mb()
steps = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    output = model(waveforms, lengths)
    loss = combined_loss(output.logits, output.embeddings, labels, 0.1, 0.07)
    optimizer.zero_grad()
    loss.total.backward()
    optimizer.step()
    steps.append(time.perf_counter() - start)
print(loaded, peak_mb(), sum(p.numel() for p in parameters), *steps)
"""


def finetune_step(encoder_dir: Path, steps: int) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", FINETUNE_PROBE, str(encoder_dir), str(steps)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {
        "batch": "12 originals + 12 views of 7.5 s",
        "rss_after_loading_mb": float(output[0]),
        "rss_peak_mb": float(output[1]),
        "trainable_parameters": int(output[2]),
        "step_seconds": [float(x) for x in output[3:]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", type=Path, default=Path(DEFAULT_ENCODER).expanduser())
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=2, help="0 skips the step")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.encoder / "config.json").is_file():  # not an error: run_all goes on without it
        print(
            f"skipped: no whisper-base at {args.encoder} (build it with shared/tools/whisper-base)"
        )
        return
    torch.set_num_threads(os.cpu_count() or 1)
    load = os.getloadavg()
    print(
        f"# Whisper throughput — {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, load average "
        f"{load[0]:.1f} at start; encoder {args.encoder}"
    )
    figures: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = make_clips(Path(folder), args.clips)
        result = throughput(args.encoder, paths, args.batch_size, args.rounds)
    figures["throughput"] = result
    seconds, clips = result["audio_seconds"], result["clips"]
    print(
        f"\n## whisper-base: {clips} clips, {result['windows']} windows, {seconds:.0f} s of audio; "
        f"{result['rounds']} interleaved rounds after a warm-up on 3 clips"
    )
    print("(utt/s and RTF: median time; ratios: median over rounds of same-round time ratios)")
    print(f"{'method':>27}  {'utt/s':>6}  {'RTF':>6}  {'vs pipeline':>11}  {'vs bare 30 s':>12}")
    for method, elapsed in result["timings"].items():
        print(
            f"{method:>27}  {clips / elapsed:6.2f}  {elapsed / seconds:6.3f}  "
            f"{result['vs_pipeline'][method]:10.2f}x  {result['vs_bare_30s'][method]:11.2f}x"
        )
    print(
        f"emoknn predict: {result['vs_pipeline'][OURS]:.2f}x the 30 s-padded pipeline, "
        f"{result['vs_bare_30s'][OURS]:.2f}x the bare encoder on 30 s inputs, "
        f"{result['vs_backbone'][OURS]:.2f}x its own backbone alone"
    )
    if args.finetune_steps:
        step = finetune_step(args.encoder, args.finetune_steps)
        figures["finetune_step"] = step
        print(
            f"\n## one fine-tuning step of whisper-base ({step['batch']}, "
            f"{step['trainable_parameters'] / 1e6:.1f} M trainable parameters, conv stem frozen)"
        )
        print(
            f"step seconds: {', '.join(f'{s:.1f}' for s in step['step_seconds'])} "
            f"(the first includes warm-up); peak RSS {step['rss_peak_mb']:.0f} MB "
            f"({step['rss_after_loading_mb']:.0f} MB after loading)"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
