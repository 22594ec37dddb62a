"""Datasets, transforms and synthetic data sets used by rnnpool's training and evaluation.

Submodules are imported explicitly (``from rnnpool.data.widerface import WiderFaceDetection``),
so importing :mod:`rnnpool.data` stays cheap.
"""
