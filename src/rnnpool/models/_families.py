"""Imports every model family so that its entrypoints register. Add new families here."""
from . import s3fd  # noqa: F401,E402  (face detectors)
