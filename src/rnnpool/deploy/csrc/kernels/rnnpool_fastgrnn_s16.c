/* One fixed-point FastGRNN step. See rnnpool_rnn.h for the arithmetic. */
#include "rnnpool_rnn_internal.h"

#define RNNPOOL_MAX_HIDDEN 64

rnnpool_status rnnpool_fastgrnn_s16(const rnnpool_fastgrnn_params *cell, const int32_t *proj,
                                    const int16_t *h_in, int16_t *h_out)
{
    const int32_t hid = cell->hidden_size, f = cell->frac_bits;
    const int32_t *bz = cell->bias_gate, *bh = cell->bias_update;
    int32_t pre[RNNPOOL_MAX_HIDDEN];
    const int32_t *a = proj;
    int32_t j;
    if (f < 0 || f > 16 || h_in == h_out || hid > RNNPOOL_MAX_HIDDEN) {
        return RNNPOOL_ARG_ERROR;
    }
    if (h_in != NULL) {
        rnnpool_matvec_s16(cell->weight_hh, h_in, hid, hid, proj, pre); /* a = W x + U h */
        a = pre;
    }
    if (cell->zeta_q == RNNPOOL_ONE_Q14 && cell->nu_q == 0) {
        /* zeta = 1, nu = 0: co = 16384 - z exactly, and
         * rshift_round(z h + (16384 - z) c, 14) = c + rshift_round(z (h - c), 14), which lies
         * between h and c, so no saturation is needed. */
        const int32_t rz = 1 << f, rc = f > 0 ? 1 << (f - 1) : 0;
        for (j = 0; j < hid; j++) {
            int32_t z = (a[j] + bz[j] + rz) >> (f + 1);
            int32_t c = (a[j] + bh[j] + rc) >> f;
            const int32_t prev = h_in != NULL ? h_in[j] : 0;
            z = z < 0 ? 0 : (z > RNNPOOL_ONE_Q14 ? RNNPOOL_ONE_Q14 : z);
            c = c < -RNNPOOL_ONE_Q14 ? -RNNPOOL_ONE_Q14 : (c > RNNPOOL_ONE_Q14 ? RNNPOOL_ONE_Q14 : c);
            h_out[j] = (int16_t)(c + ((z * (prev - c) + (1 << 13)) >> RNNPOOL_STATE_FRAC_BITS));
        }
        return RNNPOOL_OK;
    }
    for (j = 0; j < hid; j++) {
        const int32_t z = rnnpool_clamp(rnnpool_rshift_round(a[j] + bz[j], f + 1), 0,
                                        RNNPOOL_ONE_Q14);
        const int32_t c = rnnpool_clamp(rnnpool_rshift_round(a[j] + bh[j], f), -RNNPOOL_ONE_Q14,
                                        RNNPOOL_ONE_Q14);
        const int32_t co = rnnpool_rshift_round(cell->zeta_q * (RNNPOOL_ONE_Q14 - z),
                                                RNNPOOL_STATE_FRAC_BITS) + cell->nu_q;
        const int32_t prev = h_in != NULL ? h_in[j] : 0;
        h_out[j] = rnnpool_sat16(rnnpool_rshift_round(z * prev + co * c, RNNPOOL_STATE_FRAC_BITS));
    }
    return RNNPOOL_OK;
}
