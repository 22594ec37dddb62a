import pytest

from rnnpool.cli import main


@pytest.mark.parametrize("minutes", ["-1", "0", "nan"])
def test_minutes_must_be_positive(tmp_path, capsys, minutes):
    # Used to train anyway (a full epoch for -1) and report on a model of no training time.
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", minutes, "--skip", "operator",
                 "profile", "classify", "mcu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"rnnpool demo: error: --minutes must be > 0, got {float(minutes)}"]
    assert not out.exists()
