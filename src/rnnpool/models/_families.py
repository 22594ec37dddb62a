"""Imports every model family so that its entrypoints register. Add new families here."""
from . import (  # noqa: F401
    densenet,
    efficientnet,
    googlenet,
    mobilenetv1,
    mobilenetv2,
    resnet,
    s3fd,  # face detectors
    small,  # Fashion-MNIST pooling experiments
    vww,
)
