/* One fixed-point FastGRNN step. See rnnpool_rnn.h for the arithmetic. */
#include "rnnpool_rnn_internal.h"

rnnpool_status rnnpool_fastgrnn_s16(const rnnpool_fastgrnn_params *cell, const int32_t *proj,
                                    const int16_t *h_in, int16_t *h_out)
{
    const int32_t hid = cell->hidden_size, f = cell->frac_bits;
    int32_t j;
    if (f < 0 || f > 16 || h_in == h_out) {
        return RNNPOOL_ARG_ERROR;
    }
    for (j = 0; j < hid; j++) {
        int32_t a = proj[j];
        int32_t z, c, co, prev = 0;
        if (h_in != NULL) {
            a += rnnpool_dot_s16(cell->weight_hh + j * hid, h_in, hid);
            prev = h_in[j];
        }
        z = rnnpool_clamp(rnnpool_rshift_round(a + cell->bias_gate[j], f + 1), 0, RNNPOOL_ONE_Q14);
        c = rnnpool_clamp(rnnpool_rshift_round(a + cell->bias_update[j], f), -RNNPOOL_ONE_Q14,
                          RNNPOOL_ONE_Q14);
        co = rnnpool_rshift_round(cell->zeta_q * (RNNPOOL_ONE_Q14 - z), RNNPOOL_STATE_FRAC_BITS) +
             cell->nu_q;
        h_out[j] = rnnpool_sat16(rnnpool_rshift_round(z * prev + co * c, RNNPOOL_STATE_FRAC_BITS));
    }
    return RNNPOOL_OK;
}
