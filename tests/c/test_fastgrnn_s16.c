/* Golden test of rnnpool_fastgrnn_s16: STEPS steps from the zero state. */
#include "rnnpool_rnn.h"
#include "check.h"
#include GOLDEN

int main(void)
{
    const rnnpool_fastgrnn_params cell = {RNN1_IN, RNN1_HID, g_rnn1_wih8, {g_rnn1_ihm, g_rnn1_ihs},
                                          NULL, g_rnn1_whh, g_rnn1_bz, g_rnn1_bh, RNN1_FRAC,
                                          RNN1_ZETA, RNN1_NU};
    int16_t h[2][RNN1_HID];
    const int16_t *prev = NULL;
    int t, fail = 0;
    for (t = 0; t < STEPS; t++) {
        int16_t *dst = h[t & 1];
        if (rnnpool_fastgrnn_s16(&cell, g_proj + t * RNN1_HID, prev, dst) != RNNPOOL_OK) {
            return 2;
        }
        fail |= check_s16("fastgrnn", dst, g_expected + t * RNN1_HID, RNN1_HID);
        prev = dst;
    }
    if (rnnpool_fastgrnn_s16(&cell, g_proj, h[0], h[0]) != RNNPOOL_ARG_ERROR) {
        fail = 1;
    }
    return fail;
}
