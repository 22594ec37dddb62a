"""The generated model's row-source API in C (host gcc, ASan/UBSan): ``test_row_api.c`` checks
``rnnpool_model_run_rows`` / ``rnnpool_model_detect_rows`` against ``rnnpool_model_run`` /
``rnnpool_model_decode`` on a small PTQ'd detector, the reader contract and the error paths."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rnnpool.deploy import codegen
from rnnpool.deploy.decode import DecodeSpec
from tests.deploy.test_codegen import TinyDetector, _graph

HERE = Path(__file__).resolve().parent
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


@pytest.mark.parametrize("stream", [True, False])
def test_row_api_contract(tmp_path, stream):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    g, _ = _graph(TinyDetector, (24, 32))
    codegen.generate_c(g, tmp_path / "c", stream=stream, max_boxes=6,
                           decode=DecodeSpec(strides=(4, 8), sizes=(8.0, 16.0)))
    exe = tmp_path / "test_row_api"
    r = subprocess.run(["gcc", *FLAGS, f"-I{codegen.CSRC}", f"-I{tmp_path / 'c'}",
                        str(HERE / "test_row_api.c"), str(tmp_path / "c" / "model.c"),
                        str(tmp_path / "c" / "model_weights.c"),
                        *map(str, codegen.kernel_sources()), "-o", str(exe)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0 and "ok (0 failures)" in r.stdout, r.stdout + r.stderr
