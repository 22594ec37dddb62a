import pytest

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


def _fake_gpus(monkeypatch, count):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_parse_device_accepts_the_devices_it_names(monkeypatch):
    import torch

    from rnnpool.cli import parse_device

    _fake_gpus(monkeypatch, 2)
    assert parse_device("cuda") == torch.device("cuda", 0)
    assert parse_device("cuda:1") == torch.device("cuda", 1)
    assert parse_device("auto") == torch.device("cuda", 0)
    assert parse_device("cpu") == torch.device("cpu")
    _fake_gpus(monkeypatch, 0)
    assert parse_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("gpus, value, message", [
    # Accepted, then a traceback from .to() ("invalid device ordinal") once work had started.
    (1, "cuda:1", "--device 'cuda:1': this machine has 1 CUDA device (cuda:0 to cuda:0)"),
    (2, "cuda:7", "--device 'cuda:7': this machine has 2 CUDA devices (cuda:0 to cuda:1)"),
    # Parsed by torch.device and accepted, though nothing here runs on them.
    (1, "mps", "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'mps'"),
    (1, "meta", "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
    (1, "cpu:1", "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'cpu:1'"),
    (1, "cuda:x", "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'"),
    # Was a ValueError that did not name the option.
    (0, "cuda", "--device 'cuda': CUDA is not available"),
])
def test_parse_device_rejects_what_cannot_run(monkeypatch, gpus, value, message):
    from rnnpool.cli import CLIError, parse_device

    _fake_gpus(monkeypatch, gpus)
    with pytest.raises(CLIError) as e:
        parse_device(value)
    assert str(e.value).startswith(message)
