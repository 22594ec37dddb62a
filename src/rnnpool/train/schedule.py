"""Learning-rate schedule: linear warm-up then cosine decay, evaluated per optimizer step."""

from __future__ import annotations

import math

__all__ = ["cosine_lr"]


def cosine_lr(step: int, total_steps: int, lr: float, min_lr: float = 0.0,
              warmup_steps: int = 0) -> float:
    """Learning rate at optimizer step ``step`` (0-based, the step about to be taken).

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``, then

    .. math:: \\mathrm{lr}(t) = m + (\\mathrm{lr} - m)\\,\\frac{1 + \\cos(\\pi p)}{2},\\quad
              p = \\frac{t - w}{T - w}

    with ``m = min_lr``, ``w = warmup_steps`` and ``T = total_steps``.

    Args:
        step: index of the step about to be taken.
        total_steps: number of steps of the whole run.
        lr: peak learning rate.
        min_lr: final learning rate.
        warmup_steps: length of the linear warm-up.

    >>> cosine_lr(0, 100, 0.1), cosine_lr(50, 100, 0.1), round(cosine_lr(100, 100, 0.1), 12)
    (0.1, 0.05, 0.0)
    >>> cosine_lr(0, 100, 0.1, warmup_steps=10)
    0.01
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    p = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
