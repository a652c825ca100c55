/*
 * midtrans_amount.c - whole-rupiah amounts as Midtrans writes them
 * (midtrans_amount.h).
 */
#include <errno.h>
#include <stddef.h>

#include "midtrans_amount.h"

int
midtrans_amount_parse(const char *s, int64_t *ret_rupiah)
{
	int64_t v = 0;
	const char *p = s;

	if (s == NULL || *p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (p - s >= 15) /* 10^15 rupiah: far beyond any order */
			return -EINVAL;
		v = v * 10 + (*p - '0');
	}
	if (*p == '.') {
		p++;
		if (*p == '\0')
			return -EINVAL; /* "100." is not a Midtrans amount */
		for (; *p != '\0'; p++) {
			if (*p != '0') /* a non-zero fraction, or garbage */
				return -EINVAL;
		}
	}
	if (*p != '\0')
		return -EINVAL;
	*ret_rupiah = v;
	return 0;
}
