"""Float vs int8 AP of a face detector (rnnpool.deploy.accuracy) on a tiny synthetic set."""

import numpy as np
import pytest
import torch

from rnnpool.data.synthetic_faces import make_faces
from rnnpool.deploy.accuracy import Int8Detector, detector_ap_float_vs_int8, face_calibration
from rnnpool.deploy.commands import load_model, quantize_for_mcu
from rnnpool.quant import reference


@pytest.fixture(scope="module")
def face_setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_faces(tmp_path_factory.mktemp("faces") / "faces", num_train=4, num_val=3, seed=0)
    model = load_model("rnnpool_face_m4", None, True)
    calib = face_calibration(model, root, n=4)
    g, _ = quantize_for_mcu(model, (1, 240, 320), calib)
    return root, model, calib, g


def test_calibration_matches_model_input(face_setup):
    _, _, calib, _ = face_setup
    assert calib.shape == (4, 1, 240, 320)
    # normalised with the model's statistics: not the raw [0, 1] range
    assert calib.min() < 0 < calib.max()


def test_int8_detector_is_the_integer_reference(face_setup):
    _, model, calib, g = face_setup
    net = Int8Detector(model, g)
    cls, reg = net(calib[:2])
    with torch.no_grad():
        fcls, freg = model(calib[:2])
    assert cls.shape == fcls.shape and reg.shape == freg.shape
    env = reference.run(g, reference.quantize_input(calib[1], g.tensor(g.inputs[0])))
    np.testing.assert_array_equal(cls[1].numpy().ravel(), env[g.outputs[0]].ravel())
    # int8 stays near float (random weights: a sanity bound of a few % of the range)
    assert (cls - fcls).abs().max() < 0.1 * fcls.abs().max() + 1e-3
    with pytest.raises(ValueError, match="takes"):
        net(torch.zeros(1, 1, 120, 160))


def test_ap_float_vs_int8_report(face_setup, tmp_path):
    root, model, _, g = face_setup
    res = detector_ap_float_vs_int8(model, g, root, tmp_path)
    assert res["images"] == 3
    for name in ("float", "int8"):
        assert set(res[name]) == {"easy", "medium", "hard"}
        assert all(0.0 <= v <= 1.0 or np.isnan(v) for v in res[name].values())
        assert len(list((tmp_path / f"pred_{name}").rglob("*.txt"))) == 3
