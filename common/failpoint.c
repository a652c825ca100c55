/*
 * failpoint.c - see failpoint.h.  The table of names seen so far is
 * small (one entry per loop and statement) and searched linearly under a
 * mutex; it exists only while KASIR_FAILPOINTS is set.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "log.h"
#include "util.h"

#define FP_SPECS_MAX   32
#define FP_NAMES_MAX   1024
#define FP_PAUSE_MAX_S 300

struct fp_spec {
	char pattern[FAILPOINT_NAME_MAX];
	bool prefix;
	enum failpoint_action action;
	unsigned long nth;
};

struct fp_name {
	char name[FAILPOINT_NAME_MAX];
	unsigned long hits;
	bool fired;
};

static pthread_once_t fp_once = PTHREAD_ONCE_INIT;
static bool fp_on;
static struct fp_spec fp_specs[FP_SPECS_MAX];
static size_t fp_nspecs;
static char fp_dir[512];
static pthread_mutex_t fp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fp_name *fp_names; /* FP_NAMES_MAX entries */
static size_t fp_nnames;

/* One SPEC: PATTERN=ACTION[@N].  Bad specs are logged and ignored. */
static void
parse_spec(const char *spec, size_t len)
{
	char buf[FAILPOINT_NAME_MAX + 32], *eq, *at, *end;
	struct fp_spec *s;

	if (len == 0 || len >= sizeof(buf) || fp_nspecs == FP_SPECS_MAX)
		goto bad;
	memcpy(buf, spec, len);
	buf[len] = '\0';
	if ((eq = strchr(buf, '=')) == NULL || eq == buf ||
	    (size_t)(eq - buf) >= FAILPOINT_NAME_MAX)
		goto bad;
	*eq++ = '\0';
	s = &fp_specs[fp_nspecs];
	s->nth = 1;
	if ((at = strchr(eq, '@')) != NULL) {
		*at++ = '\0';
		errno = 0;
		s->nth = strtoul(at, &end, 10);
		if (errno != 0 || *end != '\0' || s->nth == 0)
			goto bad;
	}
	if (strcmp(eq, "break") == 0)
		s->action = FAILPOINT_BREAK;
	else if (strcmp(eq, "pause") == 0)
		s->action = FAILPOINT_PAUSE;
	else
		goto bad;
	len = strlen(buf);
	s->prefix = buf[len - 1] == '*';
	if (s->prefix)
		buf[len - 1] = '\0';
	/* strlen(buf) < FAILPOINT_NAME_MAX: the '=' was found within it */
	memcpy(s->pattern, buf, strlen(buf) + 1);
	fp_nspecs++;
	return;
bad:
	log_warning("KASIR_FAILPOINTS: bad spec '%.*s', ignoring", (int)len,
	            spec);
}

static void
fp_init(void)
{
	const char *env = getenv("KASIR_FAILPOINTS"), *dir, *p;

	if (env == NULL || *env == '\0')
		return;
	fp_names = calloc(FP_NAMES_MAX, sizeof(*fp_names));
	if (fp_names == NULL)
		return;
	for (p = env; *p != '\0';) {
		size_t n = strcspn(p, ",");
		parse_spec(p, n);
		p += n;
		if (*p == ',')
			p++;
	}
	dir = getenv("KASIR_FAILPOINT_DIR");
	snprintf(fp_dir, sizeof(fp_dir), "%s", dir != NULL ? dir : "");
	fp_on = fp_nspecs > 0;
	if (fp_on)
		log_warning("failpoints armed: %s", env);
}

bool
failpoint_enabled(void)
{
	(void)pthread_once(&fp_once, fp_init);
	return fp_on;
}

static const struct fp_spec *
find_spec(const char *name)
{
	for (size_t i = 0; i < fp_nspecs; i++) {
		const struct fp_spec *s = &fp_specs[i];
		size_t n = strlen(s->pattern);
		if (s->prefix ? strncmp(name, s->pattern, n) == 0
		              : strcmp(name, s->pattern) == 0)
			return s;
	}
	return NULL;
}

/* Appends one line to DIR/failpoints.<pid> (O_APPEND: whole lines). */
static void
record(const char *what, const char *name)
{
	char path[600], line[FAILPOINT_NAME_MAX + 16];
	int fd, n;

	if (fp_dir[0] == '\0')
		return;
	snprintf(path, sizeof(path), "%s/failpoints.%ld", fp_dir,
	         (long)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	n = snprintf(line, sizeof(line), "%s %s\n", what, name);
	if (n > 0 && write(fd, line, (size_t)n) < 0)
		log_debug("failpoint record: %s", strerror(errno));
	close(fd);
}

/* Creates the pause file and waits until the test removes it. */
static void
pause_here(const char *name)
{
	char path[700], file[FAILPOINT_NAME_MAX];
	int fd;

	if (fp_dir[0] == '\0')
		return;
	snprintf(file, sizeof(file), "%s", name);
	for (char *c = file; *c != '\0'; c++)
		if (*c == '/' || *c == ':')
			*c = '_';
	snprintf(path, sizeof(path), "%s/pause.%s", fp_dir, file);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	close(fd);
	for (int i = 0; i < FP_PAUSE_MAX_S * 50; i++) {
		if (access(path, F_OK) != 0)
			return;
		sleep_ms(20);
	}
	log_warning("failpoint %s: paused for %d s, going on", name,
	            FP_PAUSE_MAX_S);
	(void)unlink(path);
}

enum failpoint_action
failpoint_hit(const char *name)
{
	const struct fp_spec *spec;
	enum failpoint_action act = FAILPOINT_NONE;
	struct fp_name *e = NULL;

	if (!failpoint_enabled() || name == NULL)
		return FAILPOINT_NONE;
	pthread_mutex_lock(&fp_lock);
	for (size_t i = 0; i < fp_nnames; i++)
		if (strcmp(fp_names[i].name, name) == 0) {
			e = &fp_names[i];
			break;
		}
	if (e == NULL && fp_nnames < FP_NAMES_MAX) {
		e = &fp_names[fp_nnames++];
		snprintf(e->name, sizeof(e->name), "%s", name);
		record("hit", name);
	}
	if (e != NULL) {
		e->hits++;
		spec = find_spec(name);
		if (spec != NULL && !e->fired && e->hits >= spec->nth) {
			e->fired = true;
			act = spec->action;
			record("fired", name);
		}
	}
	pthread_mutex_unlock(&fp_lock);
	if (act != FAILPOINT_NONE)
		log_warning("failpoint %s fired (%s)", name,
		            act == FAILPOINT_BREAK ? "break" : "pause");
	if (act == FAILPOINT_PAUSE)
		pause_here(name);
	return act;
}
