"""Float-free decode of S3FD-style detector outputs, generated as C next to the model.

The generated model writes the raw int8 head maps (per source: a classification map with
``n_bg + 1`` logits per cell, ``n_bg > 1`` for S3FD's max-out background, and a box map with 4
deltas per cell). ``rnnpool_model_decode`` turns them into scored boxes with integers only:

* score: ``logit = q_face - max(q_bg)`` of the same int8 map (the zero point cancels), times the
  map's scale in Q16, giving the face-vs-background logit in Q8 (``p = sigmoid(logit / 256)``,
  the two-class softmax). Cells below ``min_logit_q8`` are skipped;
* centre: ``anchor_centre + (q - zp) * (v0 * anchor_size * scale)`` with the factor in Q16;
* size: a 256-entry table per source, ``round(256 * anchor_size * exp(min(v1 * scale * (q - zp),
  clip)))``, indexed by the int8 delta (exact for every possible input);
* boxes ``(x1, y1, x2, y2)`` in Q8 input pixels, kept in decreasing logit order (at most
  ``max_boxes``; ties keep anchor order). NMS is left to the caller
  (:func:`rnnpool.detection.boxes.nms` on the host).

One C function, ``rnnpool_decode_source``, merges one source's cells into the kept list; the
whole-buffer ``rnnpool_model_decode(output, ...)`` calls it for every source in order, and the
row-source ``rnnpool_model_detect_rows`` calls it as soon as a source's two maps (in the arena)
and all earlier sources are done, so the boxes are the same, ties and order included.

This is the :class:`~rnnpool.detection.coder.BoxCoder` decode (SSD variances) on the
:class:`~rnnpool.detection.anchors.AnchorGenerator` grid, in fixed point; tests compare it with
them on the dequantized outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["DecodeSpec", "decode_c", "decode_sources", "BOX_BYTES"]

#: Bytes of one ``rnnpool_model_box`` (six int32).
BOX_BYTES = 24


@dataclass
class DecodeSpec:
    """Anchors and box coding of a detector (one square anchor per cell and source).

    Attributes:
        strides: anchor stride of each source, input pixels.
        sizes: anchor side of each source, input pixels.
        variances: SSD ``(v0, v1)``.
        clip: upper bound of ``v1 * t_wh`` before ``exp``.
    """

    strides: Sequence[int]
    sizes: Sequence[float]
    variances: Tuple[float, float] = (0.1, 0.2)
    clip: float = math.log(1000.0 / 16)

    @classmethod
    def from_model(cls, model) -> Optional["DecodeSpec"]:
        """The spec of an :class:`~rnnpool.models.s3fd.S3FD` model (None for other models)."""
        gen = getattr(model, "anchor_generator", None)
        if gen is None or not hasattr(gen, "strides"):
            return None
        from ..detection.coder import BoxCoder

        coder = getattr(model, "box_coder", None) or BoxCoder()
        return cls(strides=tuple(gen.strides), sizes=tuple(gen.sizes),
                   variances=tuple(coder.variances), clip=float(coder.clip))


def decode_sources(g, spec: DecodeSpec) -> List[Tuple[str, str, int]]:
    """Per anchor source, in anchor order: ``(classification map, box map, n_bg)``."""
    deq = [op for op in g.ops if op.kind == "dequantize"]
    cls_ops = [op for op in deq if op.row_width == 2]
    reg_ops = [op for op in deq if op.row_width == 4]
    if len(cls_ops) != 1 or len(reg_ops) != 1:
        raise ValueError("decode needs exactly one (N, 2) classification and one (N, 4) box output")
    c_op, r_op = cls_ops[0], reg_ops[0]
    if not (len(c_op.inputs) == len(r_op.inputs) == len(spec.strides) == len(spec.sizes)):
        raise ValueError(f"decode: {len(c_op.inputs)} classification maps, {len(r_op.inputs)} "
                         f"box maps and {len(spec.strides)} anchor sources must agree")
    heads = []
    for k, (cn, rn) in enumerate(zip(c_op.inputs, r_op.inputs)):
        tc, tr = g.tensor(cn), g.tensor(rn)
        m = (getattr(c_op, "maxout_bg", None) or [1] * len(c_op.inputs))[k]
        if tuple(tc.shape[:2]) != tuple(tr.shape[:2]) or tc.shape[2] != m + 1 or tr.shape[2] != 4:
            raise ValueError(f"decode: source {k} maps {tc.shape} / {tr.shape} are not one anchor "
                             f"per cell with {m + 1} logits and 4 deltas")
        heads.append((cn, rn, m))
    return heads


def decode_c(g, spec: DecodeSpec, output_offsets: dict) -> Tuple[str, str]:
    """C source of the decode for graph ``g``.

    Returns:
        ``(c_text, header_text)``: for ``model.c``, the tables, the state type
        ``rnnpool_decode_state``, ``rnnpool_decode_source`` and ``rnnpool_model_decode``; for
        ``model.h``, the box type and the declaration of ``rnnpool_model_decode``.
    """
    v0, v1 = spec.variances
    q = np.arange(-128, 128, dtype=np.float64)
    data, rows, anchor0 = [], [], 0
    for k, (cn, rn, m) in enumerate(decode_sources(g, spec)):
        tc, tr = g.tensor(cn), g.tensor(rn)
        a, s = float(spec.sizes[k]), int(spec.strides[k])
        d = tr.scale * (q - tr.zero_point)
        tab = np.rint(256.0 * a * np.exp(np.minimum(v1 * d, spec.clip))).astype(np.int64)
        if tab.max() >= 2 ** 31:
            raise ValueError(f"decode: box size table of source {k} overflows int32")
        name = f"rnnpool_decode_exp{k}"
        vals = ", ".join(str(int(v)) for v in tab)
        data.append(f"static const int32_t {name}[256] = {{{vals}}};")
        kx = int(round(v0 * a * tr.scale * 65536.0))
        sc = int(round(tc.scale * 65536.0))
        rows.append(f"    {{{tc.shape[0]}, {tc.shape[1]}, {s}, {output_offsets[cn]}, "
                    f"{output_offsets[rn]}, {m}, {sc}, {int(tr.zero_point)}, {kx}, {anchor0}, "
                    f"{name}}},")
        anchor0 += int(tc.shape[0]) * int(tc.shape[1])
    n = len(rows)
    header = """
/* Float-free decode (see rnnpool.deploy.decode): boxes in Q8 input pixels, logit in Q8
 * (face probability = sigmoid(logit / 256)). */
typedef struct {
    int32_t x1, y1, x2, y2; /* Q8 pixels */
    int32_t logit;          /* Q8 face-vs-background logit */
    int32_t anchor;         /* anchor index (sources in order, cells row-major) */
} rnnpool_model_box;

#define RNNPOOL_MODEL_HAS_DECODE 1

/**
 * Scored boxes of the cells whose logit >= min_logit_q8, highest first, at most max_boxes
 * (ties keep anchor order).
 * @param output  the output buffer filled by rnnpool_model_run
 * @return the number of boxes written, or RNNPOOL_ARG_ERROR (< 0): output or boxes NULL,
 *         max_boxes < 0
 */
int32_t rnnpool_model_decode(const int8_t *output, int32_t min_logit_q8,
                             rnnpool_model_box *boxes, int32_t max_boxes);
"""
    c_text = "\n".join([
        "/* ---- detector decode, integers only ---- */",
        "typedef struct {",
        "    int32_t h, w, stride, cls_off, reg_off, n_bg, cls_scale_q16, reg_zp, kx_q16, anchor0;",
        "    const int32_t *exp_q8; /* [256] box side in Q8 pixels by int8 delta */",
        "} rnnpool_decode_head;", "", *data, "",
        f"static const rnnpool_decode_head rnnpool_decode_heads[{n}] = {{", *rows, "};", "",
        "/* The kept boxes so far: at most max_boxes, by decreasing logit, "
        "ties in anchor order. */",
        "typedef struct {",
        "    int32_t min_logit_q8;",
        "    rnnpool_model_box *boxes;",
        "    int32_t max_boxes;",
        "    int32_t n;",
        "} rnnpool_decode_state;", "",
        "/* Merges the cells of one source (maps cls, reg: HWC int8) into the kept boxes. Called",
        " * for the sources in order, it gives the same list as decoding them all at once. */",
        "static void rnnpool_decode_source(const rnnpool_decode_head *hd, const int8_t *cls,",
        "                                  const int8_t *reg, rnnpool_decode_state *s)",
        "{",
        "    rnnpool_model_box *boxes = s->boxes;",
        "    int32_t anchor = hd->anchor0, i, j;",
        "    for (i = 0; i < hd->h; i++) {",
        "        for (j = 0; j < hd->w; j++, anchor++) {",
        "            const int32_t cell = i * hd->w + j;",
        "            const int8_t *c = cls + cell * (hd->n_bg + 1);",
        "            const int8_t *r = reg + cell * 4;",
        "            int32_t bg = c[0], t, logit, cx, cy, bw, bh, pos;",
        "            rnnpool_model_box box;",
        "            for (t = 1; t < hd->n_bg; t++) {",
        "                if (c[t] > bg) bg = c[t];",
        "            }",
        "            logit = ((c[hd->n_bg] - bg) * hd->cls_scale_q16 + 128) >> 8;",
        "            if (logit < s->min_logit_q8) continue;",
        "            if (s->n == s->max_boxes && (s->n == 0 || logit <= boxes[s->n - 1].logit)) {",
        "                continue;",
        "            }",
        "            cx = (2 * j + 1) * hd->stride * 128",
        "                 + (((int32_t)r[0] - hd->reg_zp) * hd->kx_q16 + 128) / 256;",
        "            cy = (2 * i + 1) * hd->stride * 128",
        "                 + (((int32_t)r[1] - hd->reg_zp) * hd->kx_q16 + 128) / 256;",
        "            bw = hd->exp_q8[r[2] + 128];",
        "            bh = hd->exp_q8[r[3] + 128];",
        "            box.x1 = cx - bw / 2;",
        "            box.y1 = cy - bh / 2;",
        "            box.x2 = cx + bw / 2;",
        "            box.y2 = cy + bh / 2;",
        "            box.logit = logit;",
        "            box.anchor = anchor;",
        "            pos = s->n < s->max_boxes ? s->n++ : s->n - 1;",
        "            while (pos > 0 && boxes[pos - 1].logit < logit) {",
        "                boxes[pos] = boxes[pos - 1];",
        "                pos--;",
        "            }",
        "            boxes[pos] = box;",
        "        }",
        "    }",
        "}", "",
        "int32_t rnnpool_model_decode(const int8_t *output, int32_t min_logit_q8,",
        "                             rnnpool_model_box *boxes, int32_t max_boxes)",
        "{",
        "    rnnpool_decode_state s;",
        "    int32_t k;",
        "    if (output == NULL || boxes == NULL || max_boxes < 0) "
        "return (int32_t)RNNPOOL_ARG_ERROR;",
        "    s.min_logit_q8 = min_logit_q8;",
        "    s.boxes = boxes;",
        "    s.max_boxes = max_boxes;",
        "    s.n = 0;",
        f"    for (k = 0; k < {n}; k++) {{",
        "        const rnnpool_decode_head *hd = &rnnpool_decode_heads[k];",
        "        rnnpool_decode_source(hd, output + hd->cls_off, output + hd->reg_off, &s);",
        "    }",
        "    return s.n;",
        "}", ""])
    return c_text, header
