"""Host-gcc golden tests of the C kernels: bit-exact against the numpy integer reference.

Every kernel in ``src/rnnpool/deploy/csrc/kernels`` is compiled with
``-std=c99 -Wall -Werror -fsanitize=address,undefined``; each golden case (written by
``tests/c/make_golden.py`` into a temporary folder) is compiled into its kernel's test program
and must reproduce the reference output exactly. A second test compiles all kernels for the
Cortex-M4 (``arm-none-eabi-gcc``, DSP path) with ``-Werror``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "src" / "rnnpool" / "deploy" / "csrc"
KERNELS = sorted((CSRC / "kernels").glob("*.c"))
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]

sys.path.insert(0, str(HERE))
import make_golden


def _run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("ckernels")
    cases = make_golden.write_all(d / "data")
    objs = []
    for src in KERNELS:
        obj = d / (src.stem + ".o")
        objs.append(obj)

    def compile_one(src_obj):
        src, obj = src_obj
        _run(["gcc", *HOST_FLAGS, "-I", str(CSRC), "-c", str(src), "-o", str(obj)])

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(compile_one, zip(KERNELS, objs)))
    return d, cases, objs


def test_every_kernel_has_a_golden_test(built):
    _, cases, _ = built
    tests = {t for t, _ in cases}
    assert {"test_conv2d_s8", "test_add_s8", "test_avgpool_s8", "test_l2norm_s8",
            "test_rnnpool_s8", "test_fastgrnn_s16", "test_mbconv_s8"} <= tests
    for t in tests:
        assert (HERE / f"{t}.c").exists()


def test_kernels_bit_exact(built):
    d, cases, objs = built

    def one(tc):
        test, case = tc
        exe = d / f"{test}__{case}"
        _run(["gcc", *HOST_FLAGS, "-I", str(CSRC), "-I", str(HERE),
              f'-DGOLDEN="{d / "data" / (case + ".h")}"', str(HERE / f"{test}.c"),
              *map(str, objs), "-o", str(exe)])
        r = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
        return case, r.returncode, r.stdout + r.stderr

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(one, cases))
    failed = [f"{case} (rc {rc}):\n{out}" for case, rc, out in results if rc != 0]
    assert not failed, "\n".join(failed)


def test_kernels_compile_for_cortex_m4(tmp_path):
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb",
             "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-I", str(CSRC)]
    for src in KERNELS:
        _run([cc, *flags, "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))])
    # The DSP path is the one compiled for the M4.
    r = _run([cc, *flags, "-dM", "-E", "-x", "c", "/dev/null"])
    assert "__ARM_FEATURE_DSP 1" in r.stdout


def test_rnn_kernels_bit_exact_on_qemu_cortex_m4(built, tmp_path):
    """The DSP (SMLAD / SXTB16) paths: golden RNN, MBConv and convolution cases on an emulated
    Cortex-M4."""
    from rnnpool.deploy import mcu

    if mcu.find_toolchain() is None:
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    d, cases, _ = built
    picked = {}
    for test, case in cases:
        if test in ("test_rnnpool_s8", "test_fastgrnn_s16", "test_mbconv_s8"):
            if test not in picked or case.startswith(("rnnpool_face", "mbconv_face")):
                picked[test] = case
        elif test == "test_conv2d_s8" and ("face" in case or case.startswith(
                ("conv_random1", "conv_random4", "conv_random5"))):
            picked[case] = case
    tests_of = dict((c, t) for t, c in cases)
    for _, case in sorted(picked.items()):
        test = tests_of[case]
        fw = mcu.build_firmware(
            [HERE / f"{test}.c", *KERNELS], tmp_path / case, include_dirs=[CSRC, HERE],
            ram_budget=1024 * 1024, stack_bytes=16 * 1024,
            extra_cflags=[f'-DGOLDEN="{d / "data" / (case + ".h")}"'])
        r = mcu.run_qemu(fw.elf, tmp_path / case, timeout=120, count_instructions=False,
                         check=False)
        assert r.returncode == 0, f"{case} on QEMU: rc {r.returncode}\n{r.stdout}"
