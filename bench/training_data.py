"""Training data: padding waste of length bucketing vs random batches, and whether data loading
with augmentation keeps up with the training step.

    python bench/training_data.py [--clips 48]

- Padding waste (padded samples / all samples) on 5,531 lengths drawn like IEMOCAP's (0.5–15 s,
  mean ≈ 4.5 s, cropped to 7.5 s), batches of 12 originals: emoknn's BucketBatchSampler vs random
  batches of the same size.
- Loader throughput: `TrainingViews` items per second in one process (decode a 7.5 s wav from
  disk, random crop, `mixed` augmentation) — the rate of one DataLoader worker.
- Consumption: training steps of the tiny and base-size model (random weights, CPU, batch of 12
  originals + 12 views at 7.5 s); base-size is measured on a smaller batch and scaled per clip.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emoknn.augment import make_augmentation
from emoknn.corpora import Utterance
from emoknn.corpora.synthetic import _make_speakers, synthesize_utterance
from emoknn.data import BucketBatchSampler, TrainingViews, padding_fraction
from emoknn.losses import combined_loss
from emoknn.model import EmotionModel, ModelConfig, tiny_encoder_config


def padding_waste(batch_size: int = 12) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    lengths = (np.clip(rng.gamma(2.2, 2.05, 5531), 0.5, 15.0).clip(max=7.5) * 16000).astype(int)
    bucketed = BucketBatchSampler(lengths, batch_size, seed=0).batches()
    random = np.array_split(rng.permutation(len(lengths)), len(lengths) // batch_size)
    return padding_fraction(bucketed, lengths), padding_fraction(random, lengths)


def loader_rate(folder: Path, clips: int) -> float:
    rng = np.random.default_rng(1)
    speaker = _make_speakers(1, rng)[0]
    utterances = []
    for i in range(8):
        path = folder / f"u{i}.wav"
        sf.write(path, synthesize_utterance(speaker, "angry", 7.5, rng), 16000, subtype="PCM_16")
        utterances.append(Utterance(f"u{i}", path, "angry", "s", None))
    dataset = TrainingViews(utterances, {"angry": 0}, make_augmentation("mixed"), 120000, seed=0)
    dataset[(0, 0)]  # warm-up: RIR bank, imports
    start = time.perf_counter()
    for i in range(clips):
        dataset.audio._samples.clear()  # decode from disk every time, as a real corpus would
        dataset[(i, i % len(utterances))]
    return clips / (time.perf_counter() - start)


def step_time(encoder_config: dict, batch: int, freeze: bool = True) -> float:
    torch.manual_seed(0)
    model = EmotionModel(
        ModelConfig(
            encoder="tiny", encoder_config=dict(encoder_config), freeze_feature_encoder=freeze
        )
    ).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    waveforms = torch.randn(2 * batch, 120000) * 0.1
    lengths = torch.full((2 * batch,), 120000)
    labels = torch.arange(2 * batch) % 4

    def step() -> None:
        output = model(waveforms, lengths)
        loss = combined_loss(output.logits, output.embeddings, labels).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--skip-base", action="store_true")
    args = parser.parse_args()
    print(
        f"# training data — {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    bucketed, random = padding_waste()
    print("\n## padding waste, batches of 12, IEMOCAP-like lengths")
    print(f"{'bucketing (emoknn)':>22}  {100 * bucketed:5.1f} %   (target < 10 %)")
    print(f"{'random batches':>22}  {100 * random:5.1f} %")

    with tempfile.TemporaryDirectory() as folder:
        rate = loader_rate(Path(folder), args.clips)
    print("\n## data loading + mixed augmentation, 7.5 s clips")
    print(f"{'one worker':>22}  {rate:5.1f} clips/s")

    print("\n## what a training step consumes (12 originals + 12 views, 7.5 s, CPU)")
    tiny = step_time(tiny_encoder_config(), 12)
    print(
        f"{'tiny step':>22}  {tiny:6.2f} s  → needs {12 / tiny:6.1f} views/s "
        f"= {12 / tiny / rate:4.2f} workers"
    )
    if not args.skip_base:
        base = step_time({"model_type": "wav2vec2"}, 2) * 6  # 2+2 clips, scaled to 12+12
        print(
            f"{'base step (scaled)':>22}  {base:6.2f} s  → needs {12 / base:6.2f} views/s "
            f"= {12 / base / rate:4.2f} workers"
        )
    print(
        "(No GPU was measured here. For a GPU, divide 12 views by its step time for the views/s "
        "needed, and that by the one-worker rate above for the number of workers.)"
    )


if __name__ == "__main__":
    main()
