"""Datasets, length-bucketing batches and padding for training and evaluation.

Reproducible augmentation in worker processes: the batch sampler runs in the main process and
yields keys `(epoch, index)`; a worker turns a key into samples with its own generator
`np.random.default_rng([seed, epoch, index])`. Every utterance thus gets a distinct, reproducible
crop and view in every epoch, whatever the number of workers or which worker serves it (a
per-worker seed would make results depend on `num_workers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from emoknn.audio import audio_duration, center_crop, load_audio, random_crop
from emoknn.augment import Augmentation
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError


class AudioCache:
    """Decoded audio of a list of utterances, read on first use (optionally all at once)."""

    def __init__(self, utterances: Sequence[Utterance], preload: bool = False) -> None:
        self.utterances = list(utterances)
        self._samples: dict[int, np.ndarray] = {}
        if preload:
            for index in range(len(self.utterances)):
                self.get(index)

    def get(self, index: int) -> np.ndarray:
        samples = self._samples.get(index)
        if samples is None:
            samples = load_audio(self.utterances[index].path)
            if len(self._samples) < 100_000:  # bounded: never hold more than ~a large corpus
                self._samples[index] = samples
        return samples


class TrainingViews(Dataset):
    """Key `(epoch, index)` → an original random crop, its augmented view, and the class id."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        label_to_id: dict[str, int],
        augmentation: Augmentation,
        max_length: int,
        seed: int,
        preload: bool = False,
    ) -> None:
        self.audio = AudioCache(utterances, preload)
        self.labels = [label_to_id[u.label] for u in utterances]
        self.augmentation, self.max_length, self.seed = augmentation, max_length, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        original = random_crop(self.audio.get(index), self.max_length, rng)
        view = self.augmentation(original, rng)
        return {"original": original, "view": view, "label": self.labels[index], "index": index}


class EvaluationAudio(Dataset):
    """Index → the deterministic (centred) crop of an utterance; no augmentation."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        label_to_id: dict[str, int] | None,
        max_length: int,
        preload: bool = False,
    ) -> None:
        self.audio = AudioCache(utterances, preload)
        labels = [label_to_id[u.label] for u in utterances] if label_to_id else None
        self.labels = labels or [-1] * len(utterances)
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index = key[1] if isinstance(key, tuple) else key
        samples = center_crop(self.audio.get(index), self.max_length)
        return {"original": samples, "label": self.labels[index], "index": index}


def utterance_lengths(
    utterances: Sequence[Utterance], max_length: int, sample_rate: int
) -> list[int]:
    """Cropped length in samples of each utterance, from file headers (no decoding)."""
    return [min(max_length, round(audio_duration(u.path) * sample_rate)) for u in utterances]


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of utterances of similar length, so that little of a batch is padding.

    Each epoch: shuffle the indices (seeded by seed and epoch), cut them into pools of
    `pool_batches` batches, sort each pool by length, cut it into batches, and shuffle the order
    of the batches. With `shuffle=False` the order is simply by length (evaluation).
    Under DDP each process takes every `world_size`-th batch; the list is padded by repeating
    batches so that all processes take the same number of steps.

    Yields lists of keys `(epoch, index)` for `TrainingViews` / `EvaluationAudio`.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool_batches, self.drop_last = pool_batches, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The index batches of the current epoch, for every process."""
        count = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(count)
            pool = self.batch_size * self.pool_batches
            order = np.concatenate(
                [
                    chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    for chunk in np.array_split(order, max(1, math.ceil(count / pool)))
                ]
            )
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches = [
            order[i : i + self.batch_size].tolist() for i in range(0, count, self.batch_size)
        ]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1 and batches:
            # Every process must take the same number of steps: DDP synchronises each training
            # step, and validation metrics are reduced across processes at the end (a process
            # with no batch would leave the others waiting). So a few batches repeat; in DDP
            # validation, as with PyTorch's DistributedSampler, those few utterances count twice.
            while len(batches) % self.world_size:
                batches.append(batches[len(batches) % len(batches)])
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches()[self.rank :: self.world_size]:
            yield [(self.epoch, index) for index in batch]

    def __len__(self) -> int:
        count = len(self.lengths)
        batches = count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)
        return math.ceil(batches / self.world_size)


@dataclass
class Batch:
    """Padded audio of a batch. For training, rows are [N originals; their N views]."""

    waveforms: torch.Tensor  # (B, T) float32, zero-padded
    lengths: torch.Tensor  # (B,) real samples per row
    labels: torch.Tensor  # (B,) class ids (-1 when unknown)
    indices: torch.Tensor  # (B,) dataset index of each row

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in vars(self).values()))


def pad_batch(items: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D arrays to the longest: (B, T) waveforms and (B,) lengths."""
    lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
    waveforms = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for row, samples in enumerate(items):
        waveforms[row, : len(samples)] = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    return waveforms, lengths


def collate_views(items: Sequence[dict]) -> Batch:
    """Training batch: originals then views, each view in the row N after its original."""
    audio = [item["original"] for item in items] + [item["view"] for item in items]
    waveforms, lengths = pad_batch(audio)
    labels = torch.tensor([item["label"] for item in items] * 2, dtype=torch.long)
    indices = torch.tensor([item["index"] for item in items] * 2, dtype=torch.long)
    return Batch(waveforms, lengths, labels, indices)


def collate_evaluation(items: Sequence[dict]) -> Batch:
    waveforms, lengths = pad_batch([item["original"] for item in items])
    labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
    indices = torch.tensor([item["index"] for item in items], dtype=torch.long)
    return Batch(waveforms, lengths, labels, indices)


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Padded samples / all samples over `batches` (each padded to its longest item)."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches if len(b))
    return 1.0 - real / padded if padded else 0.0
