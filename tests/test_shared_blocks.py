"""Shared building blocks: EMA encoders, aligned queues, token masking, distillation and global-local losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.methods.losses import distilled_targets, global_local_infonce, info_nce, masked_lm_loss, positives_from_ids
from vlpbench.methods.masking import IGNORE_INDEX, mask_entities, mask_tokens
from vlpbench.methods.momentum import FeatureQueues, MomentumPairs, frozen_copy


def test_ema_update_closed_form() -> None:
    online = nn.Linear(3, 2)
    twin = frozen_copy(online)
    pairs = MomentumPairs([(online, twin)], momentum=0.9)
    assert all(not p.requires_grad for p in twin.parameters())
    with torch.no_grad():
        online.weight.fill_(1.0)
        twin.weight.fill_(0.0)
    pairs.update()
    torch.testing.assert_close(twin.weight, torch.full((2, 3), 0.1))
    pairs.update()
    torch.testing.assert_close(twin.weight, torch.full((2, 3), 0.1 * 0.9 + 0.1))
    pairs.copy_online()
    assert torch.equal(twin.weight, online.weight) and torch.equal(twin.bias, online.bias)
    with pytest.raises(ValueError, match="different parameters"):
        MomentumPairs([(nn.Linear(3, 2), nn.Linear(3, 2, bias=False))], 0.9)


def test_queues_are_fifo_aligned_and_wrap() -> None:
    q = FeatureQueues(5, {"img": 2, "ids": 0}, fill={"ids": -1}, dtype={"ids": torch.long})
    assert q.get("img").shape == (5, 2) and torch.allclose(q.get("img").norm(dim=1), torch.ones(5))
    q.enqueue(img=torch.tensor([[1.0, 0], [2, 0], [3, 0]]), ids=torch.tensor([1, 2, 3]))
    assert q.get("ids").tolist() == [1, 2, 3, -1, -1] and int(q.ptr) == 3 and int(q.filled) == 3
    q.enqueue(img=torch.tensor([[4.0, 0], [5, 0], [6, 0]]), ids=torch.tensor([4, 5, 6]))
    # 6 overwrote the oldest entry (1): first in, first out
    assert q.get("ids").tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1 and int(q.filled) == 5
    assert q.get("img")[:, 0].tolist() == [6.0, 2, 3, 4, 5]          # rows stay aligned across queues
    with pytest.raises(ValueError, match="exactly"):
        q.enqueue(img=torch.zeros(1, 2))
    assert {"queue_img", "queue_ids", "ptr", "filled"} <= set(q.state_dict())


def test_masking_follows_80_10_10_and_never_touches_pad_or_cls() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (200, 50), generator=gen)
    ids[:, 0] = 2          # [CLS]
    ids[:, 40:] = 0        # [PAD]
    out = mask_tokens(ids, vocab_size=1000, mask_id=4, never_mask=(0, 2), generator=gen)
    chosen = out.chosen
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()
    rate = chosen[:, 1:40].float().mean().item()
    assert abs(rate - 0.15) < 0.01
    assert torch.equal(out.labels[chosen], ids[chosen]) and (out.labels[~chosen] == IGNORE_INDEX).all()
    assert torch.equal(out.input_ids[~chosen], ids[~chosen])
    n = chosen.sum().item()
    to_mask = (out.input_ids == 4) & chosen
    kept = (out.input_ids == ids) & chosen
    assert abs(to_mask.sum().item() / n - 0.8) < 0.03
    assert abs(kept.sum().item() / n - 0.1) < 0.03   # unchanged (plus the rare random draw of the same id)


def test_distilled_and_multi_positive_targets() -> None:
    teacher = torch.tensor([[0.0, math.log(3.0)]])     # softmax = [1/4, 3/4]
    hard = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(distilled_targets(teacher, hard, 0.4), torch.tensor([[0.4 * 0.25 + 0.6, 0.4 * 0.75]]))
    t = positives_from_ids(torch.tensor([7, 8]), torch.tensor([7, 8, 7, 9]))
    torch.testing.assert_close(t, torch.tensor([[0.5, 0, 0.5, 0], [0, 1.0, 0, 0]]))
    with pytest.raises(ValueError, match="no candidate"):
        positives_from_ids(torch.tensor([5]), torch.tensor([7]))


def test_masked_lm_loss_with_distillation_loop_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, -100, 1], [5, -100, -100, -100]])
    alpha = 0.4
    ce, kd, n = 0.0, 0.0, 0
    for b in range(2):
        for t in range(4):
            if labels[b, t] == -100:
                continue
            logp = torch.log_softmax(logits[b, t], dim=0)
            ce += -logp[labels[b, t]].item()
            kd += -(torch.softmax(teacher[b, t], dim=0) * logp).sum().item()
            n += 1
    expected = (1 - alpha) * ce / n + alpha * kd / n
    assert masked_lm_loss(logits, labels, teacher, alpha).item() == pytest.approx(expected, rel=1e-12)
    assert masked_lm_loss(logits, labels).item() == pytest.approx(ce / n, rel=1e-12)


def _g2l_loop(local: torch.Tensor, glob: torch.Tensor, temp: float, valid: torch.Tensor) -> float:
    """Direct per-(sample, local) computation of TCL's LMI."""
    n, length, _ = local.shape
    per_sample = []
    for b in range(n):
        terms = []
        for j in range(length):
            if not valid[b, j]:
                continue
            pos = math.exp(float(glob[b] @ local[b, j]) / temp)
            neg = sum(math.exp(float(glob[b] @ local[c, k]) / temp)
                      for c in range(n) if c != b for k in range(length) if valid[c, k])
            terms.append(-math.log(pos / (pos + neg)))
        per_sample.append(sum(terms) / len(terms))
    return sum(per_sample) / n


def test_global_local_infonce_against_a_loop_with_padding() -> None:
    gen = torch.Generator().manual_seed(2)
    local = F.normalize(torch.randn(3, 4, 5, generator=gen, dtype=torch.float64), dim=-1)
    glob = F.normalize(torch.randn(3, 5, generator=gen, dtype=torch.float64), dim=-1)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    got = global_local_infonce(local, glob, 0.2, valid).item()
    assert got == pytest.approx(_g2l_loop(local, glob, 0.2, valid), rel=1e-10)
    # padded locals neither count as positives nor as negatives: changing them changes nothing
    local2 = local.clone()
    local2[0, 3] = -local2[0, 3]
    local2[1, 2:] = 0.3
    assert global_local_infonce(local2, glob, 0.2, valid).item() == pytest.approx(got, rel=1e-12)
    everything = torch.ones(3, 4, dtype=torch.bool)
    assert global_local_infonce(local, glob, 0.2).item() == pytest.approx(_g2l_loop(local, glob, 0.2, everything),
                                                                          rel=1e-10)


def test_info_nce_against_queue_candidates_equals_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(2, 4, generator=gen, dtype=torch.float64), dim=-1)
    keys = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)   # [batch(2) ; queue(3)]
    temp = 0.1
    expected = sum(-math.log(math.exp(float(q[i] @ keys[i]) / temp)
                             / sum(math.exp(float(q[i] @ k) / temp) for k in keys)) for i in range(2)) / 2
    assert info_nce(q @ keys.t() / temp, torch.arange(2)).item() == pytest.approx(expected, rel=1e-12)


def test_entity_masking_never_splits_a_pair_and_masks_one_whole_side() -> None:
    # [CLS] colour: dark red | shape: star | brand: umbra [SEP] [PAD]  -> three pairs with multi-token sides.
    ids = torch.tensor([[101, 11, 12, 13, 21, 22, 31, 32, 33, 102, 0]] * 400)
    entity = torch.tensor([[-1, 0, 0, 0, 1, 1, 2, 2, 2, -1, -1]] * 400)
    is_value = torch.tensor([[False, False, True, True, False, True, False, True, True, False, False]] * 400)
    g = torch.Generator().manual_seed(0)
    out = mask_entities(ids, entity, is_value, mask_id=103, probability=0.3, generator=g)
    for row in range(ids.shape[0]):
        for pair in range(3):
            here = entity[row] == pair
            prop, val = here & ~is_value[row], here & is_value[row]
            c = out.chosen[row]
            # Each side is masked entirely or not at all, and never both sides of one pair.
            assert bool(c[prop].all()) or not bool(c[prop].any())
            assert bool(c[val].all()) or not bool(c[val].any())
            assert not (bool(c[prop].any()) and bool(c[val].any()))
    assert not out.chosen[:, [0, 9, 10]].any()                                  # specials and padding
    assert torch.equal(out.input_ids[out.chosen], torch.full_like(ids[out.chosen], 103))
    assert torch.equal(out.labels[out.chosen], ids[out.chosen])
    assert (out.labels[~out.chosen] == IGNORE_INDEX).all()
    # Rates: a pair is chosen with p = 0.3, and then its value side half of the time.
    chosen_pairs = torch.stack([out.chosen[:, entity[0] == p].any(1) for p in range(3)], 1).float()
    assert float(chosen_pairs.mean()) == pytest.approx(0.3, abs=0.04)
    value_side = torch.stack([out.chosen[:, (entity[0] == p) & is_value[0]].any(1) for p in range(3)], 1).float()
    assert float(value_side.sum() / chosen_pairs.sum()) == pytest.approx(0.5, abs=0.08)
