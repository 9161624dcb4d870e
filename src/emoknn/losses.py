"""The training objective: L = (1 − λ)·L_ce + λ·L_scl (Wang et al., 2023).

L_scl is the supervised contrastive loss of Khosla et al. (2020), Eq. (1) of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emoknn.errors import ConfigError


def supcon_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss over a batch.

    With x_i = embeddings[i] / ‖embeddings[i]‖ (normalised here, so inputs need not be), and
    P(i) = {p ≠ i : y_p = y_i} the positives of anchor i:

        L_scl = mean over anchors i with |P(i)| > 0 of
                −1/|P(i)| · Σ_{p∈P(i)} log( exp(x_i·x_p/τ) / Σ_{a≠i} exp(x_i·x_a/τ) )

    Anchors without a positive are left out of the mean; a batch with no positive at all returns
    0 (still attached to the graph, so backward works). Computed with log-sum-exp, so any τ > 0 and
    any embedding scale are numerically safe.

    Args:
        embeddings: (B, D) float tensor.
        labels: (B,) integer class ids.
        temperature: τ > 0.

    Returns:
        Scalar tensor.
    """
    if embeddings.ndim != 2:
        raise ConfigError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ConfigError(
            f"labels must be (B,) with B = {embeddings.shape[0]}, got shape {tuple(labels.shape)}"
        )
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")

    x = F.normalize(embeddings.float(), dim=1)  # (B, D), unit rows
    similarities = x @ x.T / temperature  # (B, B): x_i·x_a / τ
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=x.device)  # a ≠ i
    # log( exp(s_ip) / Σ_{a≠i} exp(s_ia) ) = s_ip − logsumexp_{a≠i} s_ia
    log_denominator = torch.logsumexp(similarities.masked_fill(~not_self, float("-inf")), dim=1)
    log_prob = similarities - log_denominator[:, None]  # (B, B)
    positives = (labels[:, None] == labels[None, :]) & not_self  # (B, B)
    num_positives = positives.sum(dim=1)  # (B,)
    has_positive = num_positives > 0
    if not has_positive.any():
        return similarities.sum() * 0.0
    mean_log_prob = (log_prob * positives).sum(dim=1) / num_positives.clamp(min=1)  # (B,)
    return -mean_log_prob[has_positive].mean()


@dataclass
class LossParts:
    total: torch.Tensor
    cross_entropy: torch.Tensor
    contrastive: torch.Tensor


def combined_loss(
    logits: torch.Tensor,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    contrastive_weight: float = 0.1,
    temperature: float = 0.07,
    contrastive_embeddings: torch.Tensor | None = None,
    contrastive_labels: torch.Tensor | None = None,
) -> LossParts:
    """L = (1 − λ)·CE(logits, labels) + λ·L_scl(embeddings, labels), λ = `contrastive_weight`.

    λ = 0 is the paper's CE-only baseline (the contrastive term is then not computed). Under DDP,
    pass the embeddings and labels gathered from all processes as `contrastive_embeddings` /
    `contrastive_labels`, so that SupCon sees the global batch.
    """
    if not 0.0 <= contrastive_weight <= 1.0:
        raise ConfigError(f"contrastive_weight λ must lie in [0, 1], got {contrastive_weight}")
    cross_entropy = F.cross_entropy(logits.float(), labels)
    if contrastive_weight == 0.0:
        contrastive = torch.zeros((), device=logits.device)
    else:
        contrastive = supcon_loss(
            embeddings if contrastive_embeddings is None else contrastive_embeddings,
            labels if contrastive_labels is None else contrastive_labels,
            temperature,
        )
    total = (1.0 - contrastive_weight) * cross_entropy + contrastive_weight * contrastive
    return LossParts(total, cross_entropy, contrastive)


# ── dimensional emotion (arousal, valence, dominance) ───────────────────────────────────────────

REGRESSION_LOSSES = ("ccc", "mse")
# Standardised attribute values are binned at the tertiles of a standard normal (±0.4307), so
# each attribute has a low, middle and high bin of about equal size.
BIN_EDGES = (-0.4307, 0.4307)


def ccc_loss(predictions: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − CCC, averaged over attributes: predictions and targets (B, A).

    CCC_a = 2·cov(ŷ_a, y_a) / (σ²_ŷa + σ²_ya + (μ_ŷa − μ_ya)² + eps), batch (population)
    moments; eps keeps a batch whose values are all equal finite.
    """
    if predictions.ndim != 2 or predictions.shape != targets.shape:
        raise ConfigError(
            f"predictions and targets must both be (B, A), got {tuple(predictions.shape)} and "
            f"{tuple(targets.shape)}"
        )
    predictions, targets = predictions.float(), targets.float()
    mean_p, mean_t = predictions.mean(dim=0), targets.mean(dim=0)  # (A,)
    dp, dt = predictions - mean_p, targets - mean_t  # (B, A)
    covariance = (dp * dt).mean(dim=0)
    denominator = dp.pow(2).mean(dim=0) + dt.pow(2).mean(dim=0) + (mean_p - mean_t) ** 2 + eps
    return 1.0 - (2.0 * covariance / denominator).mean()


def regression_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "ccc"
                    ) -> torch.Tensor:  # fmt: skip
    """`ccc_loss` (kind "ccc") or the mean squared error (kind "mse") over (B, A)."""
    if kind not in REGRESSION_LOSSES:
        raise ConfigError(f"regression loss must be one of {REGRESSION_LOSSES}, got {kind!r}")
    if kind == "mse":
        return F.mse_loss(predictions.float(), targets.float())
    return ccc_loss(predictions, targets)


def attribute_bins(standardized: torch.Tensor) -> torch.Tensor:
    """The SupCon class of each row of standardised attributes (B, A): each attribute cut into
    low / middle / high at BIN_EDGES, and the A bins read as one base-3 number, b = Σ_a 3^a·bin_a
    (27 classes for arousal, valence, dominance). Returns (B,) int64."""
    edges = torch.tensor(BIN_EDGES, device=standardized.device, dtype=standardized.dtype)
    bins = torch.bucketize(standardized.contiguous(), edges)  # (B, A) in {0, 1, 2}
    powers = 3 ** torch.arange(standardized.shape[1], device=standardized.device)  # (A,)
    return (bins * powers).sum(dim=1)


@dataclass
class MultiTaskLossParts:
    total: torch.Tensor
    cross_entropy: torch.Tensor  # 0 when the task is dimensional
    regression: torch.Tensor  # 0 when the task is categorical
    contrastive: torch.Tensor


def task_loss(
    task: str,
    logits: torch.Tensor,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    predicted_attributes: torch.Tensor | None = None,
    target_attributes: torch.Tensor | None = None,
    contrastive_weight: float = 0.1,
    temperature: float = 0.07,
    regression_kind: str = "ccc",
) -> MultiTaskLossParts:
    """The objective of each task, λ = `contrastive_weight`, R = `regression_loss` on standardised
    attributes (B, A):

        categorical:  L = (1 − λ)·CE            + λ·SupCon(embeddings, class labels)
        dimensional:  L = (1 − λ)·R             + λ·SupCon(embeddings, attribute_bins(targets))
        both:         L = (1 − λ)·(CE + R)      + λ·SupCon(embeddings, class labels)

    In the dimensional case the positives of an anchor are the rows whose attributes fall in the
    same low/middle/high bin on every attribute (an utterance's augmented view always does).
    """
    if task == "categorical":
        parts = combined_loss(logits, embeddings, labels, contrastive_weight, temperature)
        zero = torch.zeros((), device=logits.device)
        return MultiTaskLossParts(parts.total, parts.cross_entropy, zero, parts.contrastive)
    if predicted_attributes is None or target_attributes is None:
        raise ConfigError(f"task {task!r} needs predicted and target attributes")
    regression = regression_loss(predicted_attributes, target_attributes, regression_kind)
    if task == "dimensional":
        cross_entropy = torch.zeros((), device=logits.device)
        contrast_labels = attribute_bins(target_attributes)
    elif task == "both":
        cross_entropy = F.cross_entropy(logits.float(), labels)
        contrast_labels = labels
    else:
        raise ConfigError(f"task must be categorical, dimensional or both, got {task!r}")
    if contrastive_weight == 0.0:
        contrastive = torch.zeros((), device=logits.device)
    else:
        contrastive = supcon_loss(embeddings, contrast_labels, temperature)
    total = (1.0 - contrastive_weight) * (cross_entropy + regression)
    total = total + contrastive_weight * contrastive
    return MultiTaskLossParts(total, cross_entropy, regression, contrastive)
