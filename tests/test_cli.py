import rnnpool.models
from rnnpool.cli import main


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch, capsys):
    # A KeyboardInterrupt used to end every command in a traceback (e.g. Ctrl-C in training).
    def interrupted(pattern):
        raise KeyboardInterrupt

    monkeypatch.setattr(rnnpool.models, "list_models", interrupted)
    assert main(["list-models"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "rnnpool list-models: interrupted" and "Traceback" not in err


def test_a_closed_pipe_ends_the_command_quietly():
    # `rnnpool profile ... | head -1` printed "error: [Errno 32] Broken pipe" when the reader
    # had gone before the output came; `true` reads nothing and exits at once.
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m rnnpool.cli list-models | true",
                       shell=True, capture_output=True, text=True)
    assert p.stderr == ""
