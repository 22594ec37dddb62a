"""Small float models used by the quantization tests (trained weights are not needed: random
weights with BN statistics set to realistic values exercise every integer path)."""

from __future__ import annotations

import torch
from torch import nn

from rnnpool.models._blocks import ConvBNAct, InvertedResidual
from rnnpool.nn import RNNPool2d


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def conv_relu(weight: float, bias: float, channels: int = 1) -> nn.Module:
    """``relu(weight * x + bias)`` per output channel: a 1x1 conv of one input channel whose
    output range calibration can make wide, narrow or zero."""
    conv = nn.Conv2d(1, channels, 1)
    with torch.no_grad():
        conv.weight.fill_(weight)
        conv.bias.fill_(bias)
    return nn.Sequential(conv, nn.ReLU()).eval()


class TinyClassifier(nn.Module):
    """conv -> RNNPool -> MBConv (residual) -> MBConv s2 -> global pool -> Linear."""

    def __init__(self, in_ch: int = 1, classes: int = 10):
        super().__init__()
        self.stem = ConvBNAct(in_ch, 8, 3, 2)
        self.pool = RNNPool2d(8, 8, 8, 4, 2, padding="same", gate="hard_sigmoid",
                              update="hard_tanh")
        self.block1 = InvertedResidual(32, 32, 1, 2)
        self.block2 = InvertedResidual(32, 24, 2, 2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        x = self.block2(self.block1(self.pool(self.stem(x))))
        return self.fc(torch.flatten(self.avg(x), 1))


class L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


class TinyDetector(nn.Module):
    """Two sources, L2Norm on the first, cls/box conv heads, outputs (N, A, 2) and (N, A, 4)."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(1, 4, 3, 2)
        self.pool = RNNPool2d(4, 8, 8, 4, 2, padding="same", gate="hard_sigmoid",
                              update="hard_tanh")
        self.b1 = InvertedResidual(32, 16, 1, 2)
        self.b2 = InvertedResidual(16, 16, 2, 2)
        self.norm = L2Norm(16, 10.0)
        self.cls = nn.ModuleList([nn.Conv2d(16, 2, 3, padding=1), nn.Conv2d(16, 2, 3, padding=1)])
        self.box = nn.ModuleList([nn.Conv2d(16, 4, 3, padding=1), nn.Conv2d(16, 4, 3, padding=1)])

    def forward(self, x):
        s1 = self.b1(self.pool(self.stem(x)))
        s2 = self.b2(s1)
        srcs = [self.norm(s1), s2]
        n = x.shape[0]
        cls = torch.cat([h(s).permute(0, 2, 3, 1).contiguous().view(n, -1, 2)
                         for h, s in zip(self.cls, srcs)], 1)
        box = torch.cat([h(s).permute(0, 2, 3, 1).reshape(n, -1, 4)
                         for h, s in zip(self.box, srcs)], 1)
        return cls, box
