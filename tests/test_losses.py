"""InfoNCE / CLIP loss against closed forms on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlpbench.methods.losses import clip_loss, info_nce


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_clip_loss_identity_pairs_closed_form() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    loss, logits = clip_loss(eye, eye, torch.tensor(10.0, dtype=torch.float64))
    # every row: -log(e^10 / (e^10 + e^0)) = log(1 + e^-10), in both directions
    assert loss.item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-9)
    assert torch.equal(logits, 10.0 * eye)


def test_clip_loss_asymmetric_closed_form() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    s = 2.0
    # logits = s * I T^T = [[1.2, 0.0], [1.6, 2.0]]
    i2t = ((-1.2 + _lse(1.2, 0.0)) + (-2.0 + _lse(1.6, 2.0))) / 2
    # transpose: [[1.2, 1.6], [0.0, 2.0]]
    t2i = ((-1.2 + _lse(1.2, 1.6)) + (-2.0 + _lse(0.0, 2.0))) / 2
    loss, _ = clip_loss(img, txt, torch.tensor(s, dtype=torch.float64))
    assert loss.item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-12)


def test_clip_loss_equals_open_clip_formula() -> None:
    torch.manual_seed(0)
    img = F.normalize(torch.randn(8, 5), dim=-1)
    txt = F.normalize(torch.randn(8, 5), dim=-1)
    scale = torch.tensor(14.3)
    labels = torch.arange(8)
    # open_clip ClipLoss: logits_per_image = s * I T^T, logits_per_text = s * T I^T
    expected = 0.5 * (F.cross_entropy(scale * img @ txt.t(), labels) + F.cross_entropy(scale * txt @ img.t(), labels))
    loss, _ = clip_loss(img, txt, scale)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_info_nce_soft_one_hot_equals_hard() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 6)
    hard = torch.tensor([0, 3, 5, 1])
    soft = F.one_hot(hard, 6).float()
    assert info_nce(logits, soft).item() == pytest.approx(info_nce(logits, hard).item(), rel=1e-6)


def test_info_nce_soft_targets_closed_form() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])   # softmax = [1/4, 3/4]
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert info_nce(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        info_nce(logits, torch.ones(2, 2) / 2)


def test_gradients_reach_features_and_scale() -> None:
    torch.manual_seed(2)
    raw_i = torch.randn(5, 4, requires_grad=True)
    raw_t = torch.randn(5, 4, requires_grad=True)
    t = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss, _ = clip_loss(F.normalize(raw_i, dim=-1), F.normalize(raw_t, dim=-1), t.exp())
    loss.backward()
    for g in (raw_i.grad, raw_t.grad, t.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_self_harmonized_weights_on_a_hand_made_score_matrix() -> None:
    from vlpbench.methods.losses import self_harmonized_weights

    s = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]], dtype=torch.float64)
    # Row 0 over the other modalities: softmax([0.5, 0.0]) = [e^.5, 1] / (e^.5 + 1).
    e = math.exp(0.5)
    w = self_harmonized_weights(s)
    assert w[0, 1].item() == pytest.approx(0.5 * e / (e + 1)) and w[0, 2].item() == 0.0
    assert w[1, 0].item() == pytest.approx(0.5 * e / (e + math.exp(0.2)))
    assert w[1, 2].item() == pytest.approx(0.2 * math.exp(0.2) / (e + math.exp(0.2)))
    assert torch.equal(torch.diagonal(w), torch.zeros(3, dtype=torch.float64))
    full = self_harmonized_weights(s, include_diagonal=True)
    row = torch.softmax(s[0], dim=0)
    assert torch.allclose(full[0], s[0] * row)
    # SCALE_code's variant, per sample: diagonal included, rows L2-normalised.
    batch = torch.stack([s, s.t() * 0.5])
    code = self_harmonized_weights(batch, include_diagonal=True, row_l2_normalise=True)
    assert code.shape == (2, 3, 3)
    expected = s * torch.softmax(s, dim=1)
    assert torch.allclose(code[0], expected / expected.norm(dim=1, keepdim=True))
    assert torch.allclose(code.norm(dim=-1), torch.ones(2, 3, dtype=torch.float64))
    # Gradient: constant weights by default, differentiable on request.
    g = s.clone().requires_grad_(True)
    assert not self_harmonized_weights(g).requires_grad
    self_harmonized_weights(g, stop_gradient=False).sum().backward()
    assert g.grad is not None and float(g.grad.abs().sum()) > 0
