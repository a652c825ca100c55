/*
 * fuzz_config.c - libFuzzer target for the config loader: arbitrary bytes
 * as a YAML file, applied to the shared base table plus one key of every
 * type.  Whatever the input, conf_load must return 0 or KASIR_ECONFIG,
 * stay within its bounds, leave the struct zero on failure, and leak
 * nothing (ASan/LSan).
 *
 * Seed corpus: the files in tests/fixtures/config/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base_conf.h"
#include "err.h"

struct fconf {
	struct base_conf base;
	int64_t i;
	bool b;
	int64_t d, s;
	char *str;
	struct conf_secret sec;
};

static const struct conf_key fkeys[] = {
    BASE_CONF_KEYS_FOR(struct fconf),
    {.key = "x.i",
     .type = CONF_INT,
     .offset = offsetof(struct fconf, i),
     .min = -5,
     .max = 5},
    {.key = "x.b", .type = CONF_BOOL, .offset = offsetof(struct fconf, b)},
    {.key = "x.d",
     .type = CONF_DURATION,
     .offset = offsetof(struct fconf, d),
     .defval = "1s"},
    {.key = "x.s", .type = CONF_SIZE, .offset = offsetof(struct fconf, s)},
    {.key = "x.str",
     .type = CONF_STRING,
     .offset = offsetof(struct fconf, str)},
    {.key = "x.sec",
     .type = CONF_SECRET,
     .offset = offsetof(struct fconf, sec)},
    {.key = NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	char path[64], *errs = NULL;
	struct fconf c;

	if (fd < 0) {
		/* Credential names resolve in an empty directory. */
		setenv("CREDENTIALS_DIRECTORY", "/nonexistent-kasir-fuzz", 1);
		if ((fd = memfd_create("fuzz-config", MFD_CLOEXEC)) < 0)
			abort();
	}
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	memset(&c, 0x5a, sizeof(c));
	int r = conf_load(path, fkeys, &c, &errs);
	if (r == 0) {
		if (errs != NULL)
			abort();
		conf_free(fkeys, &c);
	} else {
		if (r != KASIR_ECONFIG || errs == NULL || errs[0] == '\0')
			abort();
		/* nothing half-applied */
		if (c.base.db_url != NULL || c.base.msg_keys.items != NULL ||
		    c.base.consume.items != NULL || c.str != NULL ||
		    c.sec.value != NULL || c.base.log_level_name != NULL)
			abort();
		free(errs);
	}
	return 0;
}
