"""ADL, ACoL's erase and SPG's mask and loss against the published formulas, re-derived from
wsolevaluation's wsol/method/{adl,acol,spg,util}.py on fixed tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcam.wsol import ADL, AcolHeads, acol_erase, acol_loss, spg_loss, spg_mask


# ----------------------------------------------------------------------------- references
def normalize_tensor(x):
    """wsolevaluation's util.normalize_tensor (per channel min-max, no eps)."""
    flat = x.view(x.size(0), x.size(1), -1)
    low, high = flat.min(-1, keepdim=True)[0], flat.max(-1, keepdim=True)[0]
    return ((flat - low) / (high - low)).view(x.size())


def erase_reference(feature, attention, drop_threshold):
    b, _, h, w = attention.size()
    mask = attention.new_ones((b, 1, h, w))
    mask[torch.ge(attention, drop_threshold)] = 0.0
    return feature * mask


def mask_reference(attention, high, low):
    """wsolevaluation's get_mask at the attention's own size (it hard-codes 224)."""
    mask = torch.full_like(attention, 255.0)
    for b in range(attention.size(0)):
        fg = attention[b] > high
        if fg.float().sum().item() < 30:
            fg = attention[b] > attention[b].max() * 0.7
        mask[b][fg] = 1.0
    mask[attention < low] = 0.0
    return mask


def loss_attention_reference(logits, labels):
    pos = labels.view(-1, 1) < 255.0
    return F.binary_cross_entropy_with_logits(logits.view(-1, 1)[pos], labels.view(-1, 1)[pos])


def spg_loss_reference(out, target, thresholds, size):
    (h1, l1), (h2, l2), (h3, l3) = thresholds
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    feat = up(out["class_map"])
    attention = normalize_tensor(feat[range(feat.size(0)), target].unsqueeze(1))
    fused = (torch.sigmoid(up(out["logits_b1"])) + torch.sigmoid(up(out["logits_b2"]))) / 2
    b2i = torch.sigmoid(up(out["logits_b2"]))
    return (F.cross_entropy(out["logits"], target)
            + loss_attention_reference(up(out["logits_b2"]), mask_reference(attention, h1, l1))
            + loss_attention_reference(up(out["logits_b1"]), mask_reference(b2i, h2, l2))
            + loss_attention_reference(up(out["logits_c"]), mask_reference(fused, h3, l3)))


# ----------------------------------------------------------------------------- ADL
def test_adl_branches_match_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 7)
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.view(3, -1).max(dim=1, keepdim=True)[0].view(3, 1, 1, 1)
    drop = ADL(drop_rate=1.0, drop_threshold=0.8).train()
    torch.testing.assert_close(drop(x), x * (attention < peak * 0.8).float())
    importance = ADL(drop_rate=0.0, drop_threshold=0.8).train()
    torch.testing.assert_close(importance(x), x * torch.sigmoid(attention))


def test_adl_draw_follows_drop_rate_and_generator():
    layer = ADL(drop_rate=0.75, drop_threshold=0.5).train()
    x = torch.rand(1, 2, 4, 4) + 1.0
    layer.generator = torch.Generator().manual_seed(0)
    picks = [bool((layer(x) == 0).any()) for _ in range(400)]
    assert abs(sum(picks) / 400 - 0.75) < 0.07
    draws = torch.rand(400, generator=torch.Generator().manual_seed(0))
    assert picks == [bool(d + 0.75 >= 1.0) for d in draws.tolist()]


def test_adl_is_identity_in_eval_mode():
    x = torch.randn(2, 3, 4, 4)
    assert ADL(1.0, 0.1).eval()(x) is x


@pytest.mark.parametrize("kwargs, word", [({"drop_rate": 1.5}, "drop_rate"),
                                          ({"drop_rate": -0.1}, "drop_rate"),
                                          ({"drop_threshold": 2.0}, "drop_threshold"),
                                          ({"drop_threshold": float("nan")}, "drop_threshold")])
def test_adl_bad_options(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ADL(**kwargs)


def test_adl_needs_4d():
    with pytest.raises(ValueError, match="4-D"):
        ADL().train()(torch.rand(2, 3, 4))


# ----------------------------------------------------------------------------- ACoL
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_acol_erase_matches_reference(threshold):
    torch.manual_seed(1)
    features, raw = torch.randn(3, 4, 5, 6), torch.randn(3, 1, 5, 6)
    expected = erase_reference(features, normalize_tensor(raw), threshold)
    torch.testing.assert_close(acol_erase(features, raw, threshold), expected)
    torch.testing.assert_close(acol_erase(features, normalize_tensor(raw)[:, 0], threshold), expected)


def test_acol_heads_cam_is_max_of_normalised_maps_and_loss():
    torch.manual_seed(2)
    heads = AcolHeads(6, 3, width=8, threshold=0.7)
    feats, labels = torch.randn(2, 6, 5, 5), torch.tensor([2, 0])
    out = heads(feats, labels)
    map_a = out["map_a"][range(2), labels].unsqueeze(1)
    erased = erase_reference(feats, normalize_tensor(map_a), 0.7)
    torch.testing.assert_close(out["map_b"], heads.head_b(erased))
    cams = heads.cams(feats, labels)
    expected = torch.max(normalize_tensor(out["map_a"]), normalize_tensor(out["map_b"]))[range(2), labels]
    torch.testing.assert_close(cams, expected)
    loss = F.cross_entropy(out["logits"], labels) + F.cross_entropy(out["logits_b"], labels)
    torch.testing.assert_close(acol_loss(out, labels), loss)


@pytest.mark.parametrize("threshold", [-0.1, 1.1])
def test_acol_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        acol_erase(torch.rand(1, 2, 3, 3), torch.rand(1, 3, 3), threshold)


def test_acol_erase_shapes():
    with pytest.raises(ValueError, match="features"):
        acol_erase(torch.rand(2, 3, 3), torch.rand(2, 3, 3), 0.5)
    with pytest.raises(ValueError, match="attention"):
        acol_erase(torch.rand(2, 2, 3, 3), torch.rand(2, 4, 4), 0.5)


# ----------------------------------------------------------------------------- SPG
@pytest.mark.parametrize("size", [(7, 9), (20, 13), (224, 224)])
@pytest.mark.parametrize("high, low", [(0.7, 0.01), (0.5, 0.05), (0.7, 0.1), (0.95, 0.3)])
def test_spg_mask_matches_reference(size, high, low):
    torch.manual_seed(3)
    attention = torch.rand(4, 1, *size) ** 3
    attention[1] *= 0.5  # fewer than 30 pixels above `high` on small maps: 0.7 * max rule
    torch.testing.assert_close(spg_mask(attention, high, low), mask_reference(attention, high, low))
    torch.testing.assert_close(spg_mask(attention[:, 0], high, low), mask_reference(attention, high, low)[:, 0])


def test_spg_mask_fallback_rule():
    attention = torch.zeros(1, 10, 10)
    attention[0, 0, :5] = torch.tensor([0.2, 0.4, 0.5, 0.9, 1.0])
    mask = spg_mask(attention, high=0.95, low=0.1)  # 1 pixel > 0.95: the cut becomes 0.7
    assert mask[0, 0, :5].tolist() == [255.0, 255.0, 255.0, 1.0, 1.0]
    assert (mask[0, 1:] == 0).all()


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_spg_loss_matches_reference(size):
    torch.manual_seed(4)
    out = {"logits": torch.randn(3, 4), "class_map": torch.randn(3, 4, 4, 5),
           "logits_b1": torch.randn(3, 1, 8, 10), "logits_b2": torch.randn(3, 1, 4, 5),
           "logits_c": torch.randn(3, 1, 4, 5)}
    labels = torch.tensor([1, 3, 0])
    thresholds = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
    torch.testing.assert_close(spg_loss(out, labels, thresholds, size),
                               spg_loss_reference(out, labels, thresholds, size))


def test_spg_loss_all_ignored_term_is_zero():
    out = {"logits": torch.zeros(1, 2), "class_map": torch.ones(1, 2, 4, 4),
           "logits_b1": torch.zeros(1, 1, 4, 4), "logits_b2": torch.zeros(1, 1, 4, 4),
           "logits_c": torch.zeros(1, 1, 4, 4)}
    assert torch.isfinite(spg_loss(out, torch.tensor([0]), size=(4, 4)))


@pytest.mark.parametrize("high, low, word", [(1.2, 0.1, "high"), (0.5, -0.1, "low")])
def test_spg_bad_thresholds(high, low, word):
    with pytest.raises(ValueError, match=word):
        spg_mask(torch.rand(1, 4, 4), high, low)
