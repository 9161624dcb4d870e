from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emoknn.losses import combined_loss, supcon_loss


def supcon_brute_force(embeddings, labels, temperature):
    """Eq. (1), one anchor and one positive at a time, in float64 Python loops."""
    x = [e / e.norm() for e in embeddings.double()]
    anchor_losses = []
    for i in range(len(x)):
        positives = [p for p in range(len(x)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(
            math.exp(float(x[i] @ x[a]) / temperature) for a in range(len(x)) if a != i
        )
        terms = [
            -math.log(math.exp(float(x[i] @ x[p]) / temperature) / denominator) for p in positives
        ]
        anchor_losses.append(sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses)


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2, 3, 0, 1, 2, 3],  # every class twice (originals + views)
        [0, 0, 0, 0, 0, 1, 1, 2],  # many, twice, and once (class 2 has no positive)
        [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8],
    ],
)
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_supcon_equals_brute_force_eq_1(labels, temperature):
    generator = torch.Generator().manual_seed(len(labels))
    embeddings = torch.randn(len(labels), 16, generator=generator) * 3.0  # not normalised
    labels = torch.tensor(labels)
    expected = supcon_brute_force(embeddings, labels, temperature)
    assert supcon_loss(embeddings, labels, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_gradient_flows_and_is_stable():
    embeddings = (torch.randn(8, 32) * 1e4).requires_grad_()  # huge scale, tiny τ
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])
    loss = supcon_loss(embeddings, labels, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0


def test_supcon_without_any_positive_is_zero_and_differentiable():
    embeddings = torch.randn(4, 8, requires_grad=True)
    loss = supcon_loss(embeddings, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert embeddings.grad is not None


def test_supcon_prefers_class_clusters():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert supcon_loss(clustered, labels) < supcon_loss(mixed, labels)


def test_supcon_checks_shapes():
    with pytest.raises(ValueError, match=r"embeddings must be \(B, D\)"):
        supcon_loss(torch.randn(4), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"labels must be \(B,\) with B = 4"):
        supcon_loss(torch.randn(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        supcon_loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), temperature=0)


def test_combined_loss_weights():
    logits, embeddings = torch.randn(6, 4), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ce = F.cross_entropy(logits, labels)
    scl = supcon_loss(embeddings, labels)
    baseline = combined_loss(logits, embeddings, labels, contrastive_weight=0.0)
    assert baseline.total.item() == pytest.approx(ce.item())
    paper = combined_loss(logits, embeddings, labels, contrastive_weight=0.1)
    assert paper.total.item() == pytest.approx(0.9 * ce.item() + 0.1 * scl.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"λ must lie in \[0, 1\]"):
        combined_loss(logits, embeddings, labels, contrastive_weight=1.5)
