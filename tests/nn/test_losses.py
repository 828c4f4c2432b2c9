"""Weighted BCE / focal losses with the declarative (acorn) weighting."""

import pytest
import torch
import torch.nn.functional as F

from gnnreco.nn.losses import (
    FocalLoss,
    WeightedBCELoss,
    focal_loss_with_logits,
    weight_masks,
    weighted_bce_loss,
    weighted_focal_loss,
)


def test_masks_follow_the_weighting_convention():
    y = torch.tensor([1, 1, 0, 0, 0, 1])
    w = torch.tensor([1.0, 0.0, 0.1, 0.0, -1.0, -2.0])
    pos, neg, aw = weight_masks(y, w)
    # true & w>0 ; (false & w!=0) or w<0 ; true non-target (w=0) and w=0 fakes are masked out
    assert pos.tolist() == [True, False, False, False, False, False]
    assert neg.tolist() == [False, False, True, False, True, True]
    assert aw.tolist() == pytest.approx([1.0, 0.0, 0.1, 0.0, 1.0, 2.0])


def test_bce_proportional_and_equal_match_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.5, -0.3, 1.5])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    w = torch.tensor([1.0, 0.0, 0.1, 0.5, 1.0])
    lp = F.binary_cross_entropy_with_logits(logits, torch.ones(5), reduction="none")
    ln = F.binary_cross_entropy_with_logits(logits, torch.zeros(5), reduction="none")
    s_pos = lp[0] * 1.0
    s_neg = ln[2] * 0.1 + ln[3] * 0.5 + ln[4] * 1.0
    prop = weighted_bce_loss(logits, y, w, norm="proportional")
    assert prop.item() == pytest.approx(((s_pos + s_neg) / 4).item(), rel=1e-6)
    eq = weighted_bce_loss(logits, y, w, norm="equal")
    assert eq.item() == pytest.approx((0.5 * (s_pos / 1 + s_neg / 3)).item(), rel=1e-6)
    # pos_weight scales the positive term only
    pw = weighted_bce_loss(logits, y, w, norm="proportional", pos_weight=3.0)
    assert pw.item() == pytest.approx(((3 * s_pos + s_neg) / 4).item(), rel=1e-6)


def test_unweighted_bce_equals_torch_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g)
    y = (torch.rand(50, generator=g) > 0.5).float()
    ref = F.binary_cross_entropy_with_logits(logits, y)
    assert weighted_bce_loss(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    assert WeightedBCELoss()(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)


def test_focal_reduces_to_bce_and_downweights_easy_examples():
    logits = torch.tensor([3.0, -3.0, 0.1])
    t = torch.tensor([1.0, 0.0, 1.0])
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    assert torch.allclose(focal_loss_with_logits(logits, t, alpha=-1, gamma=0.0), bce)
    fl = focal_loss_with_logits(logits, t, alpha=-1, gamma=2.0)
    ratio = fl / bce
    assert ratio[0] < 0.01 and ratio[2] > 0.2  # easy examples are suppressed much more
    y = torch.tensor([1, 0, 1])
    assert weighted_focal_loss(logits, y, alpha=0.25).item() == pytest.approx(
        FocalLoss(alpha=0.25)(logits, y).item())


def test_all_masked_gives_zero_with_gradient():
    logits = torch.zeros(3, requires_grad=True)
    loss = weighted_bce_loss(logits, torch.tensor([1, 1, 0]), torch.tensor([0.0, 0.0, 0.0]), norm="equal")
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="norm"):
        weighted_bce_loss(torch.zeros(2), torch.zeros(2), norm="mean")
    with pytest.raises(ValueError, match="weight"):
        weighted_bce_loss(torch.zeros(2), torch.zeros(2), torch.ones(3))
