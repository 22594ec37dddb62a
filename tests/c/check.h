/* Comparison helpers of the host kernel tests: exact equality, first mismatches printed. */
#ifndef RNNPOOL_TEST_CHECK_H
#define RNNPOOL_TEST_CHECK_H
#include <stdio.h>
#include <stdint.h>

/* Defines int NAME(const char *what, const TYPE *got, const TYPE *want, long n): nonzero if any
 * of the n values differ. */
#define RNNPOOL_DEFINE_CHECK(NAME, TYPE)                                                      \
    static inline int NAME(const char *what, const TYPE *got, const TYPE *want, long n)       \
    {                                                                                         \
        long i, bad = 0;                                                                      \
        for (i = 0; i < n; i++) {                                                             \
            if (got[i] != want[i]) {                                                          \
                if (bad < 5) {                                                                \
                    printf("%s: mismatch at %ld: got %d want %d\n", what, i, (int)got[i],     \
                           (int)want[i]);                                                     \
                }                                                                             \
                bad++;                                                                        \
            }                                                                                 \
        }                                                                                     \
        if (bad) {                                                                            \
            printf("%s: %ld of %ld values differ\n", what, bad, n);                           \
        }                                                                                     \
        return bad != 0;                                                                      \
    }

RNNPOOL_DEFINE_CHECK(check_s8, int8_t)
RNNPOOL_DEFINE_CHECK(check_s16, int16_t)
#endif
