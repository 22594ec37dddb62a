"""Training: one loop (:func:`fit`) for classification and detection, its config, checkpoints.

>>> from rnnpool.train import TrainConfig, fit
>>> TrainConfig().batch_size
256
"""

from .checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .demo import demo_step
from .loop import fit

__all__ = ["TrainConfig", "fit", "save_checkpoint", "load_checkpoint",
           "load_model_from_checkpoint", "demo_step"]
