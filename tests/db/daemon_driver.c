/*
 * daemon_driver.c - the smallest daemon built on common/daemon.c, for
 * daemon_test.py: config with only the base keys, schema "ingest", runtime
 * role kasir_ingest.  Its tick counts in kasir_test_ticks_total and, while
 * the file named by $KASIR_TEST_HANG_FILE exists, wedges the main loop for
 * 7 s (to see /healthz fail and the watchdog stop).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base_conf.h"
#include "config.h"
#include "daemon.h"
#include "metrics.h"

struct test_conf {
	struct base_conf base;
};

static const struct conf_key test_keys[] = {
    BASE_CONF_KEYS_FOR(struct test_conf),
    {.key = NULL},
};

static void
tick(void *arg)
{
	struct metric *ticks = arg;
	const char *hang = getenv("KASIR_TEST_HANG_FILE");

	metric_inc(ticks);
	if (hang != NULL && access(hang, F_OK) == 0)
		sleep(7);
}

int
main(int argc, char **argv)
{
	struct test_conf conf;
	struct daemon d;
	struct metric *ticks;
	int rc;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, "kasir-dbtest", test_keys, &conf, &rc))
		return rc;
	if (daemon_init(&d, "kasir-dbtest", &conf.base, "ingest",
	                "kasir_ingest") < 0) {
		conf_free(test_keys, &conf);
		return 1;
	}
	ticks = metrics_counter(d.metrics, "kasir_test_ticks_total", NULL,
	                        "test ticks");
	rc = daemon_run(&d, tick, ticks);
	daemon_fini(&d, rc);
	conf_free(test_keys, &conf);
	return rc;
}
