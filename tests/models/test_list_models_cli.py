from rnnpool.cli import main
from rnnpool.models import list_models


def test_list_models_prints_registry(capsys):
    assert main(["list-models", "rnnpool_face_*"]) == 0
    out = capsys.readouterr().out.split()
    assert out == list_models("rnnpool_face_*") and "rnnpool_face_m4" in out


def test_list_models_no_match_is_an_error(capsys):
    assert main(["list-models", "no_such_model*"]) == 2
    assert "no registered model matches" in capsys.readouterr().err
