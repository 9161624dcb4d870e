"""How the `frozen` preset's head was chosen: candidates scored on validation speakers only.

    python bench/frozen_tuning.py --encoder ~/.cache/emoknn-dev/whisper-base \
        --corpus /work/bench-data/speech/manifest.csv --cache /work/bench-data/cache [--views 2]

For every leave-one-speaker-out fold of a corpus (the synthetic one by default, generated if
absent), each candidate is trained on the fold's training speakers and scored on the fold's
*validation* speaker; the test speaker is never looked at. Two kinds of candidate:

* probes: balanced logistic regression on standardised pooled features (training-fold
  statistics) of one layer, or of all layers concatenated, at a fixed C -- the bar to beat
  (`probe best` is the best fixed (layer, C) over the grid: an optimistic bar, chosen on the very
  speakers it is scored on);
* heads: `emoknn.frozen.fit_head` with TrainConfig overrides (UA of the epoch early stopping
  keeps, on the validation speaker's loss), and that head's embeddings + a cosine kNN
  (k = 10, training utterances; "+kNN" = 0.5 · (model + kNN) probabilities).

Features come from the product's feature cache with statistics pooling (`pooling="mean_std"`:
per layer the mean over frames, then the std); mean-only candidates read its first half, which
is exactly what mean pooling computes. `--speaker-norm` candidates standardise each speaker's
features with its own clips (transductive). The table: mean ± std over folds of validation UA.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoknn.config import TrainConfig, make_config
from emoknn.corpora import generate_synthetic_corpus, label_names, load_corpus
from emoknn.features import FeatureCache
from emoknn.folds import speaker_folds
from emoknn.frozen import FoldFeatures, build_frozen_model, fit_head, one_thread, view_spec
from emoknn.metrics import unweighted_accuracy

# TrainConfig overrides of every head candidate, on top of the `frozen` preset; OLD restores the
# preset as it stood before #23 (mean-pooled MLP head, no standardisation), NEW is #23's quick
# check. `_features`/`_views`/`_speaker_norm`/`_seeds` are harness-only settings (which pooled
# statistics the head reads, views per original, per-speaker normalisation, seeds averaged).
OLD = {"standardize": False, "layer_lr_scale": 1.0, "layer_init": "uniform", "input_dropout": 0.0,
       "projection_kind": "mlp", "projection_size": 256, "projection_dropout": 0.1,
       "head_dropout": 0.2, "weight_decay": 0.01}  # fmt: skip
NEW = {"standardize": True, "layer_lr_scale": 30.0, "layer_init": "uniform",
       "projection_kind": "linear", "projection_size": 128, "input_dropout": 0.3,
       "weight_decay": 0.05, "head_dropout": 0.0, "projection_dropout": 0.0}  # fmt: skip
HEADS: dict[str, dict[str, Any]] = {
    "old preset": {**OLD, "_views": 0},
    "preset (#23)": {"_views": 0},
    "#23 quick check (mean)": {**NEW, "_views": 2},
    "quick check, mean+std": {**NEW, "_features": "mean_std", "_views": 2},
    "mean+std, no views": {**NEW, "_features": "mean_std", "_views": 0},
    "mean+std, CE": {**NEW, "_features": "mean_std", "_views": 2, "contrastive_weight": 0.0},
    "mean+std, dropout 0.5": {**NEW, "_features": "mean_std", "_views": 2, "input_dropout": 0.5},
    "mean+std, wd 0.2": {**NEW, "_features": "mean_std", "_views": 2, "weight_decay": 0.2},
    "mean+std, proj 64": {**NEW, "_features": "mean_std", "_views": 2, "projection_size": 64},
    "mean+std, mlp 256": {
        **NEW,
        "_features": "mean_std",
        "_views": 2,
        "projection_kind": "mlp",
        "projection_size": 256,
    },
    "mean+std, best-layer init": {
        **NEW,
        "_features": "mean_std",
        "_views": 0,
        "layer_init": "best",
    },
    "mean, best-layer init": {**NEW, "_views": 0, "layer_init": "best"},
    "mean, lr 3e-4, wd 0.1": {**NEW, "_views": 0, "learning_rate": 3e-4, "weight_decay": 0.1},
    "mean, no projection": {**NEW, "_views": 0, "projection_size": 0},
    "mean, dropout 0.6": {**NEW, "_views": 0, "input_dropout": 0.6},
    "mean, 5 seeds": {**NEW, "_views": 0, "_seeds": 5},
    "mean, layer norm": {**NEW, "_views": 0, "normalize_layers": True},
    "mean, best-layer init, layer norm": {
        **NEW,
        "_views": 0,
        "layer_init": "best",
        "normalize_layers": True,
    },
    "mean, best-layer init, 5 seeds": {**NEW, "_views": 0, "layer_init": "best", "_seeds": 5},
    "mean, speaker-norm": {**NEW, "_views": 0, "_speaker_norm": True},
    "mean+std, lr x1": {**NEW, "_features": "mean_std", "_views": 2, "layer_lr_scale": 1.0},
    "mean+std, speaker-norm": {**NEW, "_features": "mean_std", "_views": 0, "_speaker_norm": True},
}
PROBE_C = (0.01, 0.1, 1.0)


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, scale = train.mean(0), train.std(0) + 1e-6
    return [(x - mean) / scale for x in (train, *others)]


def _speaker_normalized(features: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's features standardised with that speaker's own clips (transductive)."""
    out = np.empty_like(features)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows] = (features[rows] - features[rows].mean(0)) / (features[rows].std(0) + 1e-6)
    return out


def probe_scores(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                 layers: list[Any]) -> dict[str, list[float]]:  # fmt: skip
    """Validation UA per fold of balanced LR on standardised features of each layer and C."""
    from sklearn.linear_model import LogisticRegression

    scores: dict[str, list[float]] = {}
    for layer in layers:
        for c in PROBE_C:
            name = f"probe L{layer} C={c:g}"
            chosen = x[:, layer] if layer != "all" else x.reshape(len(x), -1)
            for train, val in folds:
                xt, xv = _standardize(chosen[train], chosen[val])
                lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
                lr.fit(xt, y[train])
                scores.setdefault(name, []).append(unweighted_accuracy(y[val], lr.predict(xv)))
    return scores


def _cosine_knn_probs(train_emb: np.ndarray, train_y: np.ndarray, emb: np.ndarray,
                      classes: int, k: int = 10) -> np.ndarray:  # fmt: skip
    a = train_emb / np.linalg.norm(train_emb, axis=1, keepdims=True).clip(1e-9)
    b = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-9)
    sims = b @ a.T
    nearest = np.argsort(-sims, axis=1)[:, :k]
    probs = np.zeros((len(emb), classes))
    for row, idx in enumerate(nearest):
        np.add.at(probs[row], train_y[idx], 1.0 / k)
    return probs


def head_scores(settings: dict[str, Any], base: TrainConfig, encoder: torch.nn.Module,
                labels: list[str], x: np.ndarray, views: np.ndarray, y: np.ndarray,
                speakers: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                hidden: int) -> tuple[list[float], list[float], float]:  # fmt: skip
    """Per fold validation UA of the head and of head + kNN; mean epochs."""
    overrides = {k: v for k, v in settings.items() if not k.startswith("_")}
    features = settings.get("_features", "mean")
    overrides["pooling"] = features
    config = TrainConfig(**{**asdict(base), **overrides})
    width = 2 * hidden if features == "mean_std" else hidden
    x, views = x[..., :width], views[:, :, :, :width]
    if settings.get("_speaker_norm"):
        x = _speaker_normalized(x, speakers)
    k = settings.get("_views", 2)
    model_scores, knn_scores, epochs = [], [], []
    for train, val in folds:
        fold_views = views[:k, train] if k else x[None, train]
        data = FoldFeatures(
            train=torch.from_numpy(x[train]),
            train_views=torch.from_numpy(np.ascontiguousarray(fold_views)),
            train_labels=torch.from_numpy(y[train]),
            val=torch.from_numpy(x[val]),
            val_labels=torch.from_numpy(y[val]),
        )
        probs, knn = 0.0, 0.0
        seeds = settings.get("_seeds", 1)
        for seed in range(seeds):
            seeded = TrainConfig(**{**asdict(config), "seed": config.seed + seed})
            head = build_frozen_model(seeded, labels, encoder=encoder)
            fit = fit_head(head, data, seeded)
            epochs.append(len(fit.history))
            with torch.no_grad(), one_thread():
                out_val = head.head(data.val)
                out_train = head.head(data.train)
            probs = probs + torch.softmax(out_val.logits, 1).numpy() / seeds
            knn = (
                knn
                + _cosine_knn_probs(
                    out_train.embeddings.numpy(), y[train], out_val.embeddings.numpy(), len(labels)
                )
                / seeds
            )
        model_scores.append(unweighted_accuracy(y[val], probs.argmax(1)))
        knn_scores.append(unweighted_accuracy(y[val], (0.5 * probs + 0.5 * knn).argmax(1)))
    return model_scores, knn_scores, float(np.mean(epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("bench-out/emoknn-features"))
    parser.add_argument("--views", type=int, default=2, help="augmented views cached per clip")
    parser.add_argument("--heads", default=";".join(HEADS), help="names, separated by ;")
    parser.add_argument("--probe-layers", default="all-layers",
                        help="layer indices, e.g. 0,1,all; all-layers (each); none")  # fmt: skip
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=7.5)
    args = parser.parse_args()
    corpus = args.corpus or Path("bench-out/synthetic-800")
    if args.corpus is None and not corpus.is_dir():
        generate_synthetic_corpus(corpus, seed=0, num_sessions=5, utterances_per_class=20)
    utterances = load_corpus(corpus)
    labels = label_names(utterances)
    folds = speaker_folds(utterances)
    base = make_config("frozen", encoder=args.encoder, max_seconds=args.max_seconds,
                       contrastive_weight=0.1, cache_views=max(args.views, 1))  # fmt: skip
    stats = TrainConfig(**{**asdict(base), "pooling": "mean_std"})
    model = build_frozen_model(stats, labels)
    cache = FeatureCache(args.cache, model, base.max_seconds)
    start, last = time.perf_counter(), [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"  cache: {done}/{total} in {last[0] - start:.0f} s", flush=True)

    filled = cache.fill(utterances, None, progress=progress)
    if args.views:
        filled_views = cache.fill(utterances, view_spec(base), originals=False, progress=progress)
    load = os.getloadavg()[0]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{load:.1f}; {args.encoder}; {corpus} ({len(utterances)} utterances, "
          f"{len(folds)} folds); cache: {filled.computed} originals"
          f"{f' + {filled_views.computed} views' if args.views else ''} computed in "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    if args.fill_only:
        return
    index = {u.id: i for i, u in enumerate(utterances)}
    x = cache.originals(utterances)  # (N, L + 1, 2H)
    views = cache.views(utterances, view_spec(base)) if args.views else x[None]
    y = np.array([labels.index(u.label) for u in utterances])
    speakers = np.array([u.speaker for u in utterances])
    splits = [(np.array([index[u.id] for u in f.train]), np.array([index[u.id] for u in f.val]))
              for f in folds]  # fmt: skip
    hidden = model.hidden_size
    print(f"{'candidate':<34} {'val UA':>13} {'+kNN':>13} {'epochs':>7} {'s/fold':>7}")

    def row(name: str, scores: list[float], knn: list[float] | None, epochs: float, sec: float):
        knn_text = f"{100 * np.mean(knn):>5.1f} ± {100 * np.std(knn, ddof=1):>4.1f}" if knn else ""
        print(f"{name:<34} {100 * np.mean(scores):>5.1f} ± {100 * np.std(scores, ddof=1):>4.1f} "
              f"{knn_text:>13} {epochs:>7.0f} {sec:>7.1f}", flush=True)  # fmt: skip

    encoder = model.encoder
    for name in args.heads.split(";") if args.heads != "none" else []:
        t = time.perf_counter()
        scores, knn, epochs = head_scores(HEADS[name], base, encoder, labels, x, views, y,
                                          speakers, splits, hidden)  # fmt: skip
        row(name, scores, knn, epochs, (time.perf_counter() - t) / len(splits))
    if args.probe_layers != "none":
        layers: list[Any] = ([*range(x.shape[1]), "all"] if args.probe_layers == "all-layers"
                             else [int(v) if v != "all" else v
                                   for v in args.probe_layers.split(",")])  # fmt: skip
        for features, width in (("mean", hidden), ("mean+std", 2 * hidden)):
            probes: dict[str, list[float]] = {}
            for layer in layers:
                t = time.perf_counter()
                found = probe_scores(x[..., :width], y, splits, [layer])
                sec = (time.perf_counter() - t) / len(found) / len(splits)
                for name, scores in found.items():
                    row(f"{name} ({features})", scores, None, 0, sec)
                probes.update(found)
            best = max(probes, key=lambda name: np.mean(probes[name]))
            row(f"probe best ({features}): {best[6:]}", probes[best], None, 0, 0.0)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
