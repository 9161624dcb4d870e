"""The benchmark scripts' own measurements, on small sizes (their figures come from bench/)."""

from __future__ import annotations

import knn_tuning  # bench/ is on pytest's pythonpath (pyproject.toml)
import pytest
import training_data

from emoknn.knn import Datastore, tune_knn


def test_bucketing_meets_the_padding_target_on_iemocap_like_lengths():
    bucketed, random = training_data.padding_waste()
    assert bucketed < 0.10 < random


def test_vectorised_tuning_finds_what_the_naive_loop_finds():
    keys, key_labels, queries, labels, model_probs = knn_tuning.synthetic_problem(600, 60, 32)
    store = Datastore(keys, key_labels, list("abcd"), [str(i) for i in range(600)], "bench")
    tuned = tune_knn(queries, labels, model_probs, store).interpolated.score
    assert tuned == pytest.approx(knn_tuning.naive_tuning(store, queries, labels, model_probs))


def test_interleaved_rounds_time_every_method_and_pair_ratios_within_a_round():
    import predict_throughput

    calls: list[str] = []
    methods = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = predict_throughput.interleaved_seconds(methods, rounds=4)
    assert sorted(calls) == sorted("abc" * 5)  # a warm-up round, then 4 timed rounds
    assert all(len(values) == 4 for values in times.values())
    # A slow spell doubling both sides of round 1 leaves the same-round ratio untouched.
    times = {"ours": [1.0, 2.0, 1.0], "ref": [2.0, 4.0, 2.2]}
    ratios = predict_throughput.speedups(times, lambda r: times["ref"][r])
    assert ratios["ours"] == pytest.approx(2.0) and ratios["ref"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny_frames(tmp_path_factory):
    import torch

    import frame_head
    from emoknn.corpora import generate_synthetic_corpus
    from emoknn.model import EmotionModel, ModelConfig

    utterances = generate_synthetic_corpus(tmp_path_factory.mktemp("corpus"), seed=3,
                                           num_sessions=2, utterances_per_class=2)  # fmt: skip
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny", layer_weighting=True)).eval()
    return model, utterances, frame_head.Frames(model, utterances, max_seconds=7.5)


def test_frame_bench_frames_are_the_encoders_and_its_statistics_skip_padding(tiny_frames):
    import numpy as np
    import torch

    from emoknn.audio import load_audio

    model, utterances, frames = tiny_frames
    # The mean over stored frames is the pooled feature the product's cache holds (float16 frames).
    with torch.no_grad():
        live = np.concatenate([
            model.pooled_layers(torch.from_numpy(load_audio(u.path))[None],
                                torch.tensor([len(load_audio(u.path))])).numpy()
            for u in utterances[:4]
        ])  # fmt: skip
    assert np.abs(frames.pooled([0, 1, 2, 3]) - live).max() < 2e-3 * max(1.0, np.abs(live).max())
    # Fold statistics from the per-clip sums equal those of the real frames, padding excluded.
    rows = [0, 2, 5]
    real = torch.cat([frames.data[i, :, : frames.lengths[i]].double() for i in rows], dim=1)
    mean, scale = frames.statistics(rows)
    assert torch.allclose(mean, real.mean(dim=1).float(), atol=1e-5)
    assert torch.allclose(scale, real.std(dim=1, unbiased=False).float(), rtol=1e-4, atol=1e-5)
    x, mask = frames.batch(rows)
    assert mask.sum(dim=1).tolist() == frames.lengths[rows].tolist()
    assert float(x[~mask[:, None, :].expand(-1, x.shape[1], -1)].abs().max()) == 0.0


def test_frame_bench_head_trains_and_crops_stay_within_each_clip(tiny_frames):
    import numpy as np
    import torch

    import frame_head

    _, utterances, frames = tiny_frames
    labels = sorted({u.label for u in utterances})
    y = torch.tensor([labels.index(u.label) for u in utterances])
    train, val = list(range(0, len(y), 2)), list(range(1, len(y), 2))
    _, mask = frames.batch(train, np.random.default_rng(0))
    assert int(mask.sum(dim=1).max()) <= frame_head.CROP_FRAMES
    head = frame_head.train_head(frames, train, val, y, "att-scl-crops", seed=0)
    embeddings, probabilities = frame_head.head_outputs(frames, head, val)
    assert embeddings.shape == (len(val), frame_head.WIDTH)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(val)), atol=1e-5)
