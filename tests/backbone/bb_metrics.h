/*
 * bb_metrics.h - what the backbone test reads after a clean stop of its
 * producer or consumer: the process's metrics, printed on stdout
 * (backbone_test.py parses them from the process's log).
 */
#ifndef KASIR_BB_METRICS_H
#define KASIR_BB_METRICS_H

#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"

static inline void
bb_print_metrics(struct metrics *m)
{
	char *text = NULL;
	size_t len = 0;

	if (m != NULL && metrics_render(m, &text, &len) == 0) {
		fwrite(text, 1, len, stdout);
		free(text);
	}
}

#endif
