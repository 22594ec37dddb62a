"""Property tests of the WIDER FACE protocol against the literal loop reference of
``test_evaluation`` (written from the protocol, not from the code under test): random scenes
with tied scores, duplicate and near-miss detections, several settings and the ``<= N faces``
subset."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnpool.detection.evaluation import widerface_evaluate

from .test_evaluation import _reference_ap, write_gt, write_pred

_face = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(3, 25), st.integers(3, 25))


@st.composite
def scenes(draw):
    images = []
    for _ in range(draw(st.integers(1, 5))):
        gt = [list(map(float, f)) for f in draw(st.lists(_face, max_size=5))]
        keeps = {
            s: [j for j in range(len(gt)) if draw(st.booleans())] for s in ("easy", "hard")
        }
        pred = []
        for g in gt:
            for _ in range(draw(st.integers(0, 2))):  # hits, duplicates and near misses
                dx, dy = draw(st.integers(-4, 4)), draw(st.integers(-4, 4))
                pred.append([g[0] + dx, g[1] + dy, g[2], g[3]])
        for _ in range(draw(st.integers(0, 2))):  # background
            pred.append([float(v) for v in draw(_face)])
        # scores from a small set: many ties, within and across images
        pred = [p + [draw(st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9]))] for p in pred]
        images.append((gt, keeps, pred))
    return images


@settings(max_examples=40, deadline=None)
@given(images=scenes(), max_faces=st.sampled_from([None, 1, 3]))
def test_random_scenes_match_literal_reference(images, max_faces):
    chosen = [im for im in images if max_faces is None or len(im[0]) <= max_faces]
    scores = {p[4] for _, _, preds in chosen for p in preds}
    assume(len(scores) >= 2)  # the official normalisation divides by max - min
    names = [f"i{k}" for k in range(len(images))]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "gt").mkdir()
        write_gt(
            d / "gt",
            ["0--R"],
            [names],
            [[np.array(gt).reshape(-1, 4) for gt, _, _ in images]],
            {s: [[[j + 1 for j in k[s]] for _, k, _ in images]] for s in ("easy", "hard")},
        )
        for name, (_, _, pred) in zip(names, images):
            write_pred(d / "pred", "0--R", name, pred)
        got = widerface_evaluate(d / "pred", d / "gt", max_faces=max_faces,
                                 settings=("easy", "hard"))
    assert got["num_images"] == len(chosen)
    for s in ("easy", "hard"):
        keeps = [k[s] for _, k, _ in chosen]
        if sum(map(len, keeps)) == 0:
            assert np.isnan(got[s])
            continue
        ref = _reference_ap([p for _, _, p in chosen], [g for g, _, _ in chosen], keeps)
        assert got[s] == pytest.approx(ref, abs=1e-9), s
