"""Instructions of the int8 RNNPool kernel of RNNPool-Face-M4 on an emulated Cortex-M4.

The layer: 320x240x1 -> conv3x3 s2 -> 160x120x4 -> RNNPool(patch 8, stride 4, h1 = h2 = 16)
-> 40x30x64. Random weights (hard gates, the paper's sparsity is not exploited by the dense
kernel), golden output from the numpy reference checked bit-exactly on the device. Counts come
from QEMU's TCG instruction-counting plugin between two ``harness_mark()`` calls (exact and
repeatable; instructions, not cycles).

    python benchmarks/bench_rnnpool_m4.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "c"))
sys.path.insert(0, str(ROOT))

import make_golden

from rnnpool.deploy import mcu
from rnnpool.nn import RNNPool2d
from rnnpool.quant import ir
from rnnpool.quant.ptq import quantize_rnnpool

CSRC = ROOT / "src" / "rnnpool" / "deploy" / "csrc"

BENCH_C = r"""
#include "rnnpool_rnn.h"
#include "hio.h"
#include GOLDEN

static uint32_t scratch[16384];
static int8_t out[OUT_H * OUT_W * OUT_C];

int main(void)
{
    const rnnpool_dims in_dims = {IN_H, IN_W, IN_C}, out_dims = {OUT_H, OUT_W, OUT_C};
    const rnnpool_rnnpool_params p = {K_H, K_W, STRIDE_H, STRIDE_W, PAD_T, PAD_B, PAD_L, PAD_R,
                                      PAD_MODE, IN_OFF, OUT_OFF, {OUT_MULT, OUT_SHIFT}};
    const rnnpool_fastgrnn_params rnn1 = {RNN1_IN, RNN1_HID, g_rnn1_wih8, {g_rnn1_ihm, g_rnn1_ihs},
                                          NULL, g_rnn1_whh, g_rnn1_bz, g_rnn1_bh, RNN1_FRAC,
                                          RNN1_ZETA, RNN1_NU};
    const rnnpool_fastgrnn_params rnn2 = {RNN2_IN, RNN2_HID, NULL, {NULL, NULL}, g_rnn2_wih16,
                                          g_rnn2_whh, g_rnn2_bz, g_rnn2_bh, RNN2_FRAC, RNN2_ZETA,
                                          RNN2_NU};
    rnnpool_context ctx = {scratch, sizeof scratch};
    long i, bad = 0;
    int st;
    hio_put_kv("scratch_bytes",
               rnnpool_rnnpool_s8_get_buffer_size(&p, &rnn1, &rnn2, &in_dims, &out_dims));
    harness_mark();
    st = rnnpool_rnnpool_s8(&ctx, &p, &rnn1, &rnn2, &in_dims, g_input, &out_dims, out);
    harness_mark();
    for (i = 0; i < (long)OUT_H * OUT_W * OUT_C; i++) {
        bad += out[i] != g_expected[i];
    }
    hio_put_kv("status", st);
    hio_put_kv("mismatches", bad);
    return st != 0 || bad != 0;
}
"""


def main() -> None:
    torch.manual_seed(0)
    pool = RNNPool2d(4, 16, 16, 8, 4, padding="same", gate="hard_sigmoid", update="hard_tanh")
    x = np.random.default_rng(0).integers(-128, 128, (120, 160, 4)).astype(np.int8)
    inp = ir.QTensor("x", x.shape, "int8", 0.03, -20)
    op = quantize_rnnpool(pool, "pool", inp, ir.QTensor("y", (30, 40, 64), "int8", 1 / 127, 0))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "golden.h").write_text(make_golden.rnnpool_case(op, x))
        (d / "bench.c").write_text(BENCH_C)
        fw = mcu.build_firmware([d / "bench.c", *sorted((CSRC / "kernels").glob("*.c"))], d / "fw",
                                include_dirs=[CSRC, d], ram_budget=1024 * 1024,
                                stack_bytes=16 * 1024,
                                extra_cflags=[f'-DGOLDEN="{d / "golden.h"}"'])
        r = mcu.run_qemu(fw.elf, d, timeout=600, mark_address=fw.mark_address)
    n = r.intervals()[0]
    print(f"RNNPool 160x120x4 -> 30x40x64 (patch 8, stride 4, h1=h2=16): {n:,} instructions "
          f"({n / 1e6:.1f} M), scratch {r.values['scratch_bytes']} bytes, "
          f"mismatches {r.values['mismatches']}, paper MACs {pool.macs((120, 160)):,}, "
          f"executed MACs {pool.executed_macs((120, 160)):,}")


if __name__ == "__main__":
    main()
