"""Imports every model family so that its entrypoints register. Add new families here."""
from . import s3fd  # noqa: F401,E402  (face detectors)
from . import densenet, efficientnet, googlenet, mobilenetv1, mobilenetv2, resnet, vww  # noqa: F401,E401
from . import small  # noqa: F401  (Fashion-MNIST pooling experiments)
