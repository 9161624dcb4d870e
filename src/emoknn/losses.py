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
