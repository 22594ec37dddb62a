"""The Cortex-M4 harness on tiny C programs: instruction counting, stack painting, RAM budget,
faults and semihosting file I/O (needs arm-none-eabi-gcc and qemu-system-arm)."""

import numpy as np
import pytest

from rnnpool.deploy import mcu

TC = mcu.find_toolchain()
needs_tc = pytest.mark.skipif(TC is None, reason="Cortex-M4 toolchain / qemu-system-arm absent")

LOOP_C = r"""
#include "hio.h"
static void spin(unsigned n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b\n\t" : "+r"(n) : : "cc");
}
int main(void) {
    harness_mark(); spin(1000); harness_mark();
    harness_mark(); spin(5000); harness_mark();
    volatile float x = 1.5f;
    hio_put_kv("y10", (long)(x * 3.0f * 10.0f));
    return 7;
}
"""

STACK_C = r"""
#include "hio.h"
__attribute__((noinline)) static int deep(int n) {
    volatile unsigned char buf[STACK_BUF];
    for (int i = 0; i < STACK_BUF; i++) buf[i] = (unsigned char)(i + n);
    return buf[n % STACK_BUF];
}
int main(void) {
    int r = deep(3);
    hio_put_kv("stack_used", harness_stack_used());
    return r == 6 ? 0 : 1;
}
"""

IO_C = r"""
#include "hio.h"
static signed char buf[256] HIO_BUFFER;
int main(void) {
    int fin = hio_open("input.bin", HIO_READ), fout = hio_open("output.bin", HIO_WRITE);
    long n = hio_flen(fin);
    hio_read(fin, buf, (size_t)n);
    for (long i = 0; i < n; i++) buf[i] = (signed char)(buf[i] * 3 + 1);
    hio_write(fout, buf, (size_t)n);
    hio_close(fin); hio_close(fout);
    hio_put_kv("n", n);
    return 0;
}
"""


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@needs_tc
def test_instruction_count_of_known_loop(tmp_path):
    fw = mcu.build_firmware([_write(tmp_path, "loop.c", LOOP_C)], tmp_path / "b",
                            ram_budget=16384, stack_bytes=2048)
    r = mcu.run_qemu(fw.elf, tmp_path, mark_address=fw.mark_address, check=False)
    assert r.returncode == 7  # main's return value reaches the host
    assert r.values["y10"] == 45  # hard-float code runs (FPU enabled at reset)
    a, b = r.intervals()
    # subs + bne per iteration, plus the same call overhead in both intervals.
    assert b - a == 2 * (5000 - 1000)
    assert 0 <= a - 2 * 1000 <= 8
    assert r.instructions > r.marks[-1]


@needs_tc
def test_painted_stack_measures_a_known_frame(tmp_path):
    used = {}
    for size in (512, 3000):
        fw = mcu.build_firmware([_write(tmp_path, "stack.c", STACK_C)], tmp_path / f"b{size}",
                                ram_budget=16384, stack_bytes=4096,
                                extra_cflags=[f"-DSTACK_BUF={size}"])
        used[size] = mcu.run_qemu(fw.elf, tmp_path, count_instructions=False).values["stack_used"]
    assert used[512] >= 512 and used[3000] >= 3000
    assert abs((used[3000] - used[512]) - (3000 - 512)) <= 16


@needs_tc
def test_stack_overflow_is_reported(tmp_path):
    fw = mcu.build_firmware([_write(tmp_path, "stack.c", STACK_C)], tmp_path / "b",
                            ram_budget=16384, stack_bytes=1024, extra_cflags=["-DSTACK_BUF=2000"])
    r = mcu.run_qemu(fw.elf, tmp_path, count_instructions=False, check=False)
    assert r.returncode == 71


@needs_tc
def test_ram_budget_overflow_fails_the_link(tmp_path):
    src = _write(tmp_path, "big.c", "static volatile char big[20000];\n"
                 "int main(void) { big[5] = 1; return big[5] - 1; }\n")
    mcu.build_firmware([src], tmp_path / "ok", ram_budget=32768, stack_bytes=1024)
    with pytest.raises(mcu.MCUError, match="does not fit the RAM budget of 16384"):
        mcu.build_firmware([src], tmp_path / "b", ram_budget=16384, stack_bytes=1024)


@needs_tc
def test_fault_exits_with_code_70(tmp_path):
    src = _write(tmp_path, "fault.c",
                 "int main(void) { __asm__ volatile(\"udf #0\"); return 0; }\n")
    fw = mcu.build_firmware([src], tmp_path / "b", ram_budget=16384, stack_bytes=1024)
    r = mcu.run_qemu(fw.elf, tmp_path, count_instructions=False, check=False, timeout=30)
    assert r.returncode == 70 and "fault" in r.stdout


@needs_tc
def test_semihosting_file_io_matches_host_build(tmp_path):
    data = np.random.default_rng(0).integers(-128, 128, 200, dtype=np.int8)
    (tmp_path / "input.bin").write_bytes(data.tobytes())
    want = (data.astype(np.int32) * 3 + 1).astype(np.int8)  # two's-complement wrap, as in C
    src = _write(tmp_path, "io.c", IO_C)
    fw = mcu.build_firmware([src], tmp_path / "b", ram_budget=16384, stack_bytes=1024)
    assert fw.static_ram_bytes < 1024  # the I/O buffer lives in the .hostio region
    r = mcu.run_qemu(fw.elf, tmp_path, count_instructions=False)
    assert r.values["n"] == 200
    got = np.frombuffer((tmp_path / "output.bin").read_bytes(), np.int8)
    np.testing.assert_array_equal(got, want)
    # The same program on the host (ASan/UBSan) agrees.
    exe = mcu.build_host([src], tmp_path / "h", extra_cflags=["-fwrapv"])
    import subprocess
    (tmp_path / "output.bin").unlink()
    subprocess.run([str(exe)], cwd=tmp_path, check=True, timeout=60)
    np.testing.assert_array_equal(np.frombuffer((tmp_path / "output.bin").read_bytes(), np.int8),
                                  want)
