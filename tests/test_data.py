from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emoknn.augment import make_augmentation
from emoknn.corpora import load_synthetic
from emoknn.data import (
    BucketBatchSampler,
    TrainingViews,
    collate_views,
    padding_fraction,
    utterance_lengths,
)

LABELS = {"angry": 0, "happy": 1, "neutral": 2, "sad": 3}


def views_of_epoch(dataset, sampler, epoch, workers):
    sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_views, num_workers=workers
    )
    out = {}
    for batch in loader:
        half = len(batch.labels) // 2
        for row in range(half):
            index = int(batch.indices[row])
            length = int(batch.lengths[half + row])
            out[index] = batch.waveforms[half + row, :length].numpy().copy()
    return out


def test_views_are_reproducible_across_workers_and_distinct_across_epochs(small_synthetic_corpus):
    utterances = load_synthetic(small_synthetic_corpus)[:16]
    dataset = TrainingViews(utterances, LABELS, make_augmentation("noise"), 8000, seed=3)
    lengths = utterance_lengths(utterances, 8000, 16000)
    sampler = BucketBatchSampler(lengths, batch_size=4, seed=3)
    in_process = views_of_epoch(dataset, sampler, epoch=0, workers=0)
    in_workers = views_of_epoch(dataset, sampler, epoch=0, workers=2)
    assert sorted(in_process) == list(range(16))
    for index in in_process:
        np.testing.assert_array_equal(in_process[index], in_workers[index])
    next_epoch = views_of_epoch(dataset, sampler, epoch=1, workers=2)
    assert all(not np.array_equal(in_process[i], next_epoch[i]) for i in in_process)
    # Within an epoch, utterances do not share noise: views differ from their originals differently.
    originals = {i: dataset[(0, i)]["original"] for i in (0, 1)}
    noise = [in_process[i][:3000] - originals[i][:3000] for i in (0, 1)]
    assert not np.allclose(noise[0], noise[1])


def test_batch_rows_are_originals_then_their_views(small_synthetic_corpus):
    utterances = load_synthetic(small_synthetic_corpus)[:6]
    dataset = TrainingViews(utterances, LABELS, make_augmentation("volume"), 8000, seed=0)
    batch = collate_views([dataset[(0, i)] for i in range(3)])
    assert batch.waveforms.shape[0] == 6
    assert batch.labels.tolist()[:3] == batch.labels.tolist()[3:]
    assert batch.indices.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.all(batch.waveforms[0, batch.lengths[0] :] == 0)


def test_bucketing_keeps_padding_small_and_covers_every_utterance():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.gamma(2.0, 2.2, 5000) * 16000, 8000, 120000).astype(int)
    bucketed = BucketBatchSampler(lengths, batch_size=12, seed=0)
    random_batches = np.array_split(rng.permutation(5000), 5000 // 12)
    assert padding_fraction(bucketed.batches(), lengths) < 0.10
    assert padding_fraction(random_batches, lengths) > 0.3
    assert sorted(i for b in bucketed.batches() for i in b) == list(range(5000))
    first = bucketed.batches()
    bucketed.set_epoch(1)
    assert bucketed.batches() != first
    bucketed.set_epoch(0)
    assert bucketed.batches() == first


def test_ddp_shards_are_disjoint_and_equal_in_length():
    lengths = list(range(1000, 1100))
    shards = [list(BucketBatchSampler(lengths, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(BucketBatchSampler(lengths, 8, world_size=2))
    seen = [i for shard in shards for batch in shard for _, i in batch]
    assert set(seen) == set(range(100))


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be ≥ 1"):
        BucketBatchSampler([1, 2], batch_size=0)


def test_ddp_evaluation_shards_cover_everything_in_equal_steps():
    """Each process must take as many validation steps as the others, even with one batch."""
    lengths = list(range(1000, 1101))  # 101 utterances: 13 batches of 8
    shards = [BucketBatchSampler(lengths, 8, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    assert [len(list(shard)) for shard in shards] == [len(shard) for shard in shards] == [7, 7]
    seen = [i for shard in shards for batch in shard for _, i in batch]
    assert set(seen) == set(range(101)) and len(seen) - 101 == 8  # one batch repeated
    single = [list(BucketBatchSampler(lengths[:5], 8, shuffle=False, rank=r, world_size=2))
              for r in (0, 1)]  # fmt: skip
    assert len(single[0]) == len(single[1]) == 1
