/* Comparison helper of the host kernel tests: exact equality, first mismatches printed. */
#ifndef RNNPOOL_TEST_CHECK_H
#define RNNPOOL_TEST_CHECK_H
#include <stdio.h>
#include <stdint.h>

static inline int check_s8(const char *what, const int8_t *got, const int8_t *want, long n)
{
    long i, bad = 0;
    for (i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            if (bad < 5) {
                printf("%s: mismatch at %ld: got %d want %d\n", what, i, got[i], want[i]);
            }
            bad++;
        }
    }
    if (bad) {
        printf("%s: %ld of %ld values differ\n", what, bad, n);
    }
    return bad != 0;
}

static inline int check_s16(const char *what, const int16_t *got, const int16_t *want, long n)
{
    long i, bad = 0;
    for (i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            if (bad < 5) {
                printf("%s: mismatch at %ld: got %d want %d\n", what, i, got[i], want[i]);
            }
            bad++;
        }
    }
    if (bad) {
        printf("%s: %ld of %ld values differ\n", what, bad, n);
    }
    return bad != 0;
}
#endif
