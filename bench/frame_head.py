"""Does a frame-level head beat the encoder probe? Attentive statistics pooling over the frozen
encoder's frame sequences, against logistic regression on one pooled layer, on held-out speakers.

    python bench/frame_head.py --encoder ~/.cache/emoknn-dev/whisper-base \
        --corpus /work/bench-data/speech/manifest.csv [--variants att,att-scl,att-scl-crops]

The pooled head of the `frozen` preset sees one vector per layer (the mean over frames); a
frame-level head sees the frames. This bench asks whether that is worth a frame cache (#19 item 3,
#23): every clip's L + 1 hidden-state sequences are computed once with the product's encoder code
(`EmotionModel.hidden_states`, the same frames the pooled cache averages) and held in memory as
float16 (its size is printed); then, over the leave-one-speaker-out folds of `emoknn.folds`:

* **probe**: `emoknn.probe.EncoderProbe` on the mean over frames of each layer (the row every
  cross-validation reports: layer and C chosen on the validation speaker, refit on train + val);
* **frame heads**, trained on the training speakers with early stopping on the validation
  speaker's CE loss (patience 10, at most 60 epochs; AdamW lr 1e-3, weight decay 0.05, batch 32):

      x_l,t  = (h_l,t − μ_l) / σ_l                       per (layer, value), training frames only
      u_t    = ReLU(W · dropout(Σ_l softmax(w)_l · x_l,t))      W: H → 128 (layer weights 30× lr)
      a_t    = softmax_t(v · tanh(A u_t))                  attention over real frames
      e      = P · [Σ_t a_t u_t, sqrt(Σ_t a_t u_t² − (Σ_t a_t u_t)²)]    embedding, 128 wide
      logits = C · e

  `att`: cross-entropy only; `att-scl`: (1 − λ)·CE + λ·SupCon (λ = 0.1, τ = 0.07,
  `emoknn.losses.combined_loss`); `att-scl-crops`: the same with a second view of every clip, a
  random crop of its frames (at most 100 frames, 2 s), as SupCon's positive — augmented views
  for free from the cached frames. "+kNN" averages the head's probabilities with a cosine 10-NN
  over the training speakers' embeddings (softmax over similarities / 0.1).

Printed: validation UA (the speaker each fold tunes on: the figure to choose by) and test UA per
variant, mean ± std over folds, and the paired test-UA difference of each against the probe
(95 % t-interval, exact Wilcoxon p), as `emoknn crossval` reports it. Deterministic from --seed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emoknn.audio import load_audio
from emoknn.corpora import label_names, load_corpus
from emoknn.folds import speaker_folds
from emoknn.losses import combined_loss
from emoknn.metrics import unweighted_accuracy
from emoknn.model import EmotionModel, ModelConfig, default_normalization
from emoknn.probe import EncoderProbe
from emoknn.stats import paired_test

WIDTH = 128  # frame projection and embedding width
CROP_FRAMES = 100  # at most this many frames in a crop view (2 s at 50 frames/s)


class FrameHead(nn.Module):
    """Layer weights → frame projection → attentive statistics pooling → embedding → classes."""

    def __init__(self, layers: int, hidden: int, classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(layers))
        self.dropout = nn.Dropout(dropout)
        self.frame = nn.Sequential(nn.Linear(hidden, WIDTH), nn.ReLU())
        self.attention = nn.Sequential(nn.Linear(WIDTH, 64), nn.Tanh(), nn.Linear(64, 1))
        self.embed = nn.Linear(2 * WIDTH, WIDTH)
        self.classifier = nn.Linear(WIDTH, classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """x (B, L + 1, T, H) raw frames (zero on padding), mask (B, T), stats the training
        frames' (mean, scale), each (L + 1, H) → embeddings (B, D), logits (B, C).

        Σ_l w_l·(x_l − μ_l)/σ_l = Σ_l (w_l/σ_l)·x_l − Σ_l w_l·μ_l/σ_l: one pass over the frames."""
        mean, scale = stats
        weights = torch.softmax(self.layer_weights, dim=0)[:, None] / scale  # (L + 1, H)
        mixed = torch.einsum("ld,bltd->btd", weights, x.float()) - (weights * mean).sum(dim=0)
        frames = self.frame(self.dropout(mixed))  # (B, T, W)
        scores = self.attention(frames).squeeze(-1).masked_fill(~mask, -1e4)  # (B, T)
        attention = torch.softmax(scores, dim=1)[..., None]  # zero on padding
        mean = (attention * frames).sum(dim=1)
        variance = (attention * frames * frames).sum(dim=1) - mean * mean
        embeddings = self.embed(torch.cat([mean, torch.sqrt(variance.clamp(min=1e-5))], dim=-1))
        return embeddings, self.classifier(embeddings)


class Frames:
    """Every clip's hidden-state sequences, float16, padded: (N, L + 1, T_max, H) + lengths."""

    def __init__(self, model: EmotionModel, utterances: list, max_seconds: float) -> None:
        sequences = []
        with torch.inference_mode():
            for utterance in utterances:
                samples = load_audio(utterance.path)[: round(max_seconds * 16000)]
                waveform = torch.from_numpy(samples)[None]
                hidden, _ = model.hidden_states(waveform, torch.tensor([waveform.shape[1]]))
                sequences.append(torch.stack([h[0] for h in hidden]).half())  # (L + 1, T, H)
        self.lengths = torch.tensor([s.shape[1] for s in sequences])
        layers, _, hidden_size = sequences[0].shape
        self.data = torch.zeros(len(sequences), layers, int(self.lengths.max()), hidden_size,
                                dtype=torch.float16)  # fmt: skip
        for i, sequence in enumerate(sequences):
            self.data[i, :, : sequence.shape[1]] = sequence
        # Per-clip sums over real frames (float64): any fold's statistics in milliseconds.
        self.sums = torch.stack([s.double().sum(dim=1) for s in sequences])  # (N, L + 1, H)
        self.squares = torch.stack([(s.double() ** 2).sum(dim=1) for s in sequences])

    def statistics(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale per (layer, value) over the real frames of `rows` (N, L + 1, H)."""
        count = self.lengths[rows].sum().double()
        mean = self.sums[rows].sum(dim=0) / count
        variance = self.squares[rows].sum(dim=0) / count - mean**2
        return mean.float(), variance.clamp(min=1e-12).sqrt().float()

    def pooled(self, rows: list[int]) -> np.ndarray:
        """Mean over frames of each layer: what the pooled feature cache holds (N, L + 1, H)."""
        return (self.sums[rows] / self.lengths[rows, None, None]).float().numpy()

    def batch(self, rows: list[int], crop_rng: np.random.Generator | None = None):
        """Frames (B, L + 1, T, H) float16, zero on padding, and mask (B, T) of `rows`; with
        `crop_rng`, a random crop of at most CROP_FRAMES frames of each."""
        lengths = self.lengths[rows]
        if crop_rng is None:
            width = int(lengths.max())
            x = self.data[torch.tensor(rows), :, :width]
        else:
            spare = (lengths - CROP_FRAMES).clamp(min=0).numpy()
            starts = torch.from_numpy(crop_rng.integers(0, spare + 1))
            lengths = lengths.clamp(max=CROP_FRAMES)
            width = int(lengths.max())
            x = torch.stack(
                [self.data[r, :, s : s + width] for r, s in zip(rows, starts.tolist(), strict=True)]
            )
            x = x * (torch.arange(width)[None] < lengths[:, None])[:, None, :, None]
        return x, torch.arange(width)[None] < lengths[:, None]


def train_head(frames: Frames, train: list[int], val: list[int], y: torch.Tensor,
               variant: str, seed: int) -> FrameHead:  # fmt: skip
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stats = frames.statistics(train)
    head = FrameHead(frames.data.shape[1], frames.data.shape[3], int(y.max()) + 1)
    rest = [p for name, p in head.named_parameters() if name != "layer_weights"]
    optimizer = torch.optim.AdamW([
        {"params": rest},
        {"params": [head.layer_weights], "lr": 3e-2, "weight_decay": 0.0},
    ], lr=1e-3, weight_decay=0.05)  # fmt: skip
    contrastive = 0.0 if variant == "att" else 0.1
    val_x, val_mask = frames.batch(val)
    best, best_state, bad = float("inf"), None, 0
    for _epoch in range(60):
        head.train()
        order = rng.permutation(len(train))
        for start in range(0, len(train), 32):
            rows = [train[i] for i in order[start : start + 32]]
            labels = y[rows]
            embeddings, logits = head(*frames.batch(rows), stats)
            if variant == "att-scl-crops":
                crop_embeddings, crop_logits = head(*frames.batch(rows, rng), stats)
                embeddings = torch.cat([embeddings, crop_embeddings])
                logits = torch.cat([logits, crop_logits])
                labels = labels.repeat(2)
            loss = combined_loss(logits, embeddings, labels, contrastive, 0.07).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(head(val_x, val_mask, stats)[1], y[val]))
        if val_loss < best:
            best, bad = val_loss, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= 10:
                break
    head.load_state_dict(best_state)
    head.stats = stats
    return head.eval()


def head_outputs(frames: Frames, head: FrameHead, rows: list[int]):
    with torch.no_grad():
        parts = [head(*frames.batch(rows[i : i + 64]), head.stats) for i in range(0, len(rows), 64)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).softmax(dim=1)


def knn_probabilities(store: torch.Tensor, store_labels: torch.Tensor, queries: torch.Tensor,
                      classes: int) -> torch.Tensor:  # fmt: skip
    similarity = F.normalize(queries, dim=1) @ F.normalize(store, dim=1).T
    top = similarity.topk(10, dim=1)
    weights = torch.softmax(top.values / 0.1, dim=1)
    return torch.zeros(len(queries), classes).scatter_add_(1, store_labels[top.indices], weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--variants", default="att,att-scl,att-scl-crops")
    parser.add_argument("--max-seconds", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("EMOKNN_THREADS", os.cpu_count() or 1)))
    utterances = load_corpus(args.corpus)
    labels = label_names(utterances)
    y = torch.tensor([labels.index(u.label) for u in utterances])
    position = {u.id: i for i, u in enumerate(utterances)}
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"encoder {args.encoder}; {len(utterances)} clips of {args.corpus}",
        flush=True,
    )
    start = time.perf_counter()
    config = ModelConfig(encoder=args.encoder, labels=labels, layer_weighting=True,
                         normalize_waveforms=default_normalization(args.encoder))  # fmt: skip
    frames = Frames(EmotionModel(config).eval(), utterances, args.max_seconds)
    real = int(frames.lengths.sum()) * frames.data.shape[1] * frames.data.shape[3] * 2
    print(
        f"frames: {time.perf_counter() - start:.0f} s to encode; float16 frame cache of every "
        f"layer {real / 2**20:.0f} MB ({frames.data.shape[1]} layers × "
        f"{int(frames.lengths.sum())} frames × {frames.data.shape[3]})",
        flush=True,
    )
    folds = speaker_folds(utterances)
    variants = args.variants.split(",")
    val_ua: dict[str, list[float]] = {v: [] for v in ["probe", *variants]}
    test_ua: dict[str, list[float]] = {
        v: [] for v in ["probe"] + [f"{v}{s}" for v in variants for s in ("", " +kNN")]
    }
    for fold in folds:
        train, val, test = ([position[u.id] for u in group]
                            for group in (fold.train, fold.val, fold.test))  # fmt: skip
        probe = EncoderProbe().fit(frames.pooled(train), y[train].numpy(),
                                   frames.pooled(val), y[val].numpy())  # fmt: skip
        val_ua["probe"].append(probe.val_ua_)
        test_ua["probe"].append(
            unweighted_accuracy(y[test].numpy(), probe.predict(frames.pooled(test)))
        )
        for variant in variants:
            began = time.perf_counter()
            head = train_head(frames, train, val, y, variant, args.seed)
            _, val_probs = head_outputs(frames, head, val)
            val_ua[variant].append(unweighted_accuracy(y[val].numpy(), val_probs.argmax(1).numpy()))
            store, _ = head_outputs(frames, head, train)
            queries, probs = head_outputs(frames, head, test)
            knn = knn_probabilities(store, y[train], queries, len(labels))
            for suffix, p in (("", probs), (" +kNN", 0.5 * probs + 0.5 * knn)):
                test_ua[variant + suffix].append(
                    unweighted_accuracy(y[test].numpy(), p.argmax(1).numpy())
                )
            print(
                f"  {fold.name} {variant}: val {val_ua[variant][-1]:.3f} test "
                f"{test_ua[variant][-1]:.3f} (+kNN {test_ua[variant + ' +kNN'][-1]:.3f}; probe "
                f"{test_ua['probe'][-1]:.3f}) {time.perf_counter() - began:.0f} s",
                flush=True,
            )
    print(f"\n{len(folds)} folds, leave one speaker out; UA % mean ± std over folds; load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'variant':24s} {'val UA':>12s} {'test UA':>12s}   test vs probe (95 % CI, p)")
    for name, scores in test_ua.items():
        val = val_ua.get(name)
        val_cell = f"{100 * np.mean(val):5.1f} ± {100 * np.std(val):4.1f}" if val else ""
        line = (
            f"{name:24s} {val_cell:>12s} {100 * np.mean(scores):5.1f} ± {100 * np.std(scores):4.1f}"
        )
        if name != "probe":
            c = paired_test(np.array(scores), np.array(test_ua["probe"]))
            line += (
                f"   {100 * c.mean:+5.1f} ({100 * c.ci_low:+.1f} to {100 * c.ci_high:+.1f}, "
                f"p = {c.p_value:.2f})"
            )
        print(line)


if __name__ == "__main__":
    main()
