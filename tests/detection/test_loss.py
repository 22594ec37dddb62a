import math
import random

import torch

from rnnpool.detection.loss import MultiBoxLoss, hard_negative_mask

from .test_matcher import ANCHORS, literal_match, random_faces


def smooth_l1(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def literal_loss(logits, reg, anchors_xyxy, batch):
    """Per-anchor loops: matched faces, SSD encoding, 3:1 hardest negatives by background CE."""
    total_box, total_cls, num_pos = 0.0, 0.0, 0
    for b, faces in enumerate(batch):
        assign = literal_match(faces, anchors_xyxy)
        ce = []
        for a, (x1, y1, x2, y2) in enumerate(anchors_xyxy):
            l0, l1 = logits[b][a]
            lse = math.log(math.exp(l0) + math.exp(l1))
            ce.append(lse - (l1 if assign[a] >= 0 else l0))
            if assign[a] >= 0:
                num_pos += 1
                fx1, fy1, fx2, fy2 = faces[assign[a]]
                acx, acy, aw, ah = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                t = [
                    ((fx1 + fx2) / 2 - acx) / (0.1 * aw),
                    ((fy1 + fy2) / 2 - acy) / (0.1 * ah),
                    math.log((fx2 - fx1) / aw) / 0.2,
                    math.log((fy2 - fy1) / ah) / 0.2,
                ]
                total_box += sum(smooth_l1(reg[b][a][k] - t[k]) for k in range(4))
                total_cls += ce[a]
        pos_b = sum(1 for v in assign if v >= 0)
        negs = sorted([a for a in range(len(assign)) if assign[a] < 0], key=lambda a: (-ce[a], a))
        total_cls += sum(ce[a] for a in negs[: 3 * pos_b])
    n = max(num_pos, 1)
    return (total_box + total_cls) / n, total_cls / n, total_box / n


def test_multibox_loss_matches_literal():
    rng = random.Random(1)
    anchors_xyxy = torch.tensor(ANCHORS, dtype=torch.float64)
    anchors = torch.cat(
        [
            (anchors_xyxy[:, :2] + anchors_xyxy[:, 2:]) / 2,
            anchors_xyxy[:, 2:] - anchors_xyxy[:, :2],
        ],
        1,
    )
    crit = MultiBoxLoss()
    for _ in range(4):
        batch = [random_faces(rng) for _ in range(3)]
        batch = [[f for f in faces if f[2] > f[0] and f[3] > f[1]] for faces in batch]
        g = torch.Generator().manual_seed(rng.randint(0, 10**6))
        logits = torch.randn(3, len(ANCHORS), 2, generator=g, dtype=torch.float64) * 2
        reg = torch.randn(3, len(ANCHORS), 4, generator=g, dtype=torch.float64)
        gts = [torch.tensor(f, dtype=torch.float64).view(-1, 4) for f in batch]
        loss, logs = crit(logits, reg, anchors, gts)
        ref, ref_cls, ref_box = literal_loss(logits.tolist(), reg.tolist(), ANCHORS, batch)
        assert abs(loss.item() - ref) < 1e-9 * max(1, ref)
        assert abs(logs["loss_cls"] - ref_cls) < 1e-6 and abs(logs["loss_box"] - ref_box) < 1e-6


def test_hard_negative_counts_and_choice():
    bg = torch.tensor(
        [[0.1, 5.0, 0.3, 4.0, 0.2, 9.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]]
    )
    pos = torch.zeros(2, 8, dtype=torch.bool)
    pos[0, 5] = True  # 1 positive -> 3 negatives: the largest bg losses among the others
    pos[1, :3] = True  # 3 positives -> min(9, 5) = 5 negatives: all the rest
    neg = hard_negative_mask(bg, pos)
    assert neg[0].nonzero().flatten().tolist() == [1, 3, 7]
    assert neg[1].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    assert not (neg & pos).any()
    assert not hard_negative_mask(bg, torch.zeros(2, 8, dtype=torch.bool)).any()


def test_loss_gradients_flow_and_no_faces():
    anchors = torch.tensor([[8.0, 8.0, 16.0, 16.0], [24.0, 8.0, 16.0, 16.0]])
    cls = torch.zeros(2, 2, 2, requires_grad=True)
    reg = torch.zeros(2, 2, 4, requires_grad=True)
    loss, logs = MultiBoxLoss()(
        cls, reg, anchors, [torch.tensor([[1.0, 1.0, 15.0, 17.0]]), torch.zeros(0, 4)]
    )
    loss.backward()
    assert reg.grad[0, 0].abs().sum() > 0 and reg.grad[1].abs().sum() == 0
    assert (
        cls.grad[0].abs().sum() > 0 and cls.grad[1].abs().sum() == 0
    )  # no positives -> no negatives
    assert logs["num_pos"] == 0.5
    loss0, _ = MultiBoxLoss()(cls, reg, anchors, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert loss0.item() == 0.0
