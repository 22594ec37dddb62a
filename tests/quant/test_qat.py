"""Quantization-aware fine-tuning on a tiny model."""

import numpy as np
import torch

from rnnpool.quant import reference as R
from rnnpool.quant.qat import FakeQuant, convert, fake_quant_weight, prepare_qat

from ._models import TinyClassifier, randomize_bn


def test_fake_quant_grid_and_straight_through_gradient():
    fq = FakeQuant().train()
    x = torch.linspace(-1.0, 3.0, 101, requires_grad=True)
    y = fq(x)
    scale = 4.0 / 255
    zp = round(-128 + 1.0 / scale)
    q = torch.round(y.detach() / scale) + zp
    assert torch.allclose(y.detach(), (q - zp) * scale, atol=1e-5)  # on the int8 grid
    fq.eval()
    x2 = torch.tensor([-5.0, 0.5, 10.0], requires_grad=True)
    fq(x2).sum().backward()
    assert x2.grad.tolist() == [0.0, 1.0, 0.0]  # zero outside the range
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    wq = fake_quant_weight(w)
    s = w.detach().abs().amax((1, 2, 3), keepdim=True) / 127
    assert torch.allclose(wq / s, torch.round(wq / s), atol=1e-4)
    wq.sum().backward()
    assert torch.all(w.grad == 1)


def test_qat_finetune_and_convert_matches_integer_graph():
    torch.manual_seed(0)
    model = randomize_bn(TinyClassifier())
    for cell in (model.pool.rnn1, model.pool.rnn2):  # trained with the soft non-linearities
        cell.gate, cell.update = "sigmoid", "tanh"
    x = torch.randn(160, 1, 16, 16)
    with torch.no_grad():
        labels = model(x).argmax(1)
    qat = prepare_qat(model)
    assert model.pool.rnn1.gate == "sigmoid"  # the input model is untouched
    assert qat.source.pool.rnn1.gate == "hard_sigmoid"
    qat.train()  # BN stays frozen by itself (test_qat_train_keeps_batchnorm_frozen)
    opt = torch.optim.Adam([p for p in qat.parameters() if p.requires_grad], 2e-3)
    losses = []
    for step in range(15):
        idx = torch.arange(step * 8, step * 8 + 16) % 128
        loss = torch.nn.functional.cross_entropy(qat(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    qat.eval()
    g = convert(qat, x[:8])
    # The learned ranges are used, including for a BN-folded convolution's output.
    fqs = dict(qat.named_modules())
    for fq_name, node in qat.fake_quant_nodes:
        if node == "block1_project_1":
            lo, hi = float(fqs[fq_name].min_val), float(fqs[fq_name].max_val)
            assert abs(g.tensor(node).scale - (max(hi, 0) - min(lo, 0)) / 255) < 1e-9
            break
    else:
        raise AssertionError("no FakeQuant on the projection output")
    with torch.no_grad():
        ref = qat(x[128:]).numpy()
    out = np.concatenate([R.run(g, R.quantize_input(x[i:i + 1], g.tensor(g.inputs[0])))["output_0"]
                          for i in range(128, 160)])
    assert np.abs(out - ref).max() < 0.05 * (ref.max() - ref.min())
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_qat_train_keeps_batchnorm_frozen():
    # A BatchNorm that no convolution absorbs (after RNNPool) must keep using its running
    # statistics in .train() mode, as the integer graph does; it used to switch to batch ones.
    from torch import nn

    from rnnpool.nn import RNNPool2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(),
                          RNNPool2d(4, 4, 4, 4, 4, gate="hard_sigmoid", update="hard_tanh"),
                          nn.BatchNorm2d(16), nn.Conv2d(16, 3, 1)).eval()
    qat = prepare_qat(model)
    bns = [m for m in qat.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns  # the one after RNNPool is still a BatchNorm2d in the QAT graph
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        y_eval = qat.eval()(x)
        y_train = qat.train()(x)
    assert qat.training and all(not m.training for m in bns)
    for m, (mean, var) in zip(bns, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    # the observers learn ranges in train mode; with those fixed, the outputs are the same
    with torch.no_grad():
        y_eval2 = qat.eval()(x)
    torch.testing.assert_close(y_eval2, y_train)
    assert y_eval.shape == y_train.shape
