/*
 * midtrans_amount.h - Midtrans's amounts on the wire ("10000.00",
 * "10000"): whole rupiah, since IDR has no minor unit in Midtrans's
 * answers.  Used by kasir-order (the state machine's amount checks,
 * refund notices) and kasir-reconciler (whether an answer shows a refund).
 */
#ifndef KASIR_MIDTRANS_AMOUNT_H
#define KASIR_MIDTRANS_AMOUNT_H

#include <stdint.h>

/* "50000.00" / "50000" -> 50000.  Digits (at most 15), then optionally a
 * point and zeros only.  -EINVAL for anything else (NULL, "", "-1",
 * "50000.5", "1e5", "100."). */
int midtrans_amount_parse(const char *s, int64_t *ret_rupiah);

#endif
