"""Classification pieces plugged into :func:`rnnpool.train.fit`: the loss and the evaluation."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["classification_loss", "evaluate_classifier", "make_evaluate", "format_confusion"]


def classification_loss(model: nn.Module, batch: Any, device: torch.device
                        ) -> Tuple[Tensor, Dict[str, float]]:
    """Cross-entropy of ``model(images)`` for an ``(images, labels)`` batch; logs batch accuracy."""
    images, labels = batch
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, {"acc": acc}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
                        batch_size: int = 256, workers: int = 0,
                        num_classes: Optional[int] = None, progress: bool = False
                        ) -> Dict[str, Any]:
    """Top-1 accuracy, mean cross-entropy and the confusion matrix of ``model`` on ``dataset``.

    Returns:
        ``{"acc": float, "loss": float, "n": int, "confusion": LongTensor[K, K]}`` with
        ``confusion[true, predicted]`` counts.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    confusion: Optional[Tensor] = None
    total_loss, n = 0.0, 0
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="evaluate", leave=False)
    for images, labels in it:
        images, labels = images.to(device), labels.to(device)
        logits = model(images).float()
        k = num_classes or logits.shape[1]
        if confusion is None:
            confusion = torch.zeros(k, k, dtype=torch.long)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        pred = logits.argmax(1)
        idx = (labels.cpu() * k + pred.cpu())
        confusion += torch.bincount(idx, minlength=k * k).view(k, k)
        n += labels.numel()
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluation set is empty")
    assert confusion is not None
    return {"acc": confusion.diag().sum().item() / n, "loss": total_loss / n, "n": n,
            "confusion": confusion}


def make_evaluate(dataset: Dataset, batch_size: int = 256, workers: int = 0):
    """An ``evaluate(model, device)`` for :func:`fit` returning ``val_acc`` and ``val_loss``."""

    def evaluate(model: nn.Module, device: torch.device) -> Dict[str, float]:
        r = evaluate_classifier(model, dataset, device, batch_size, workers)
        return {"val_acc": r["acc"], "val_loss": r["loss"]}

    return evaluate


def format_confusion(confusion: Tensor, classes) -> str:
    """A text table: per class its recall (accuracy) and the row of the confusion matrix."""
    names = [str(c) for c in classes] if classes else [str(i) for i in range(len(confusion))]
    w = max(6, max(len(s) for s in names))
    lines = [f"{'class':<{w}}  {'acc':>6}  {'n':>6}  counts per predicted class"]
    for i, row in enumerate(confusion.tolist()):
        tot = sum(row)
        acc = row[i] / tot if tot else float("nan")
        lines.append(f"{names[i]:<{w}}  {acc:6.3f}  {tot:6d}  " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)
