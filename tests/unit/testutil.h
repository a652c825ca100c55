/*
 * testutil.h - helpers shared by the unit tests: temp dirs and files,
 * capturing stdout/stderr of in-process calls.
 */
#ifndef KASIR_TESTUTIL_H
#define KASIR_TESTUTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TU_UNUSED __attribute__((unused))

/* A fresh directory under $TMPDIR; path written into dir (>= 64 bytes). */
static TU_UNUSED void
tu_mkdtemp(char *dir, size_t len)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, len, "%s/kasir-unit-XXXXXX", t ? t : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

/* Writes content to dir/name with mode; returns the path (static buffer
 * rotation of 8 so several can be alive at once). */
static TU_UNUSED const char *
tu_write(const char *dir, const char *name, const char *content, mode_t mode)
{
	static char paths[8][512];
	static int next;
	char *p = paths[next++ % 8];
	int fd;

	snprintf(p, 512, "%s/%s", dir, name);
	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 ||
	    write(fd, content, strlen(content)) != (ssize_t)strlen(content)) {
		perror(p);
		abort();
	}
	if (fchmod(fd, mode) < 0) {
		perror("fchmod");
		abort();
	}
	close(fd);
	return p;
}

static TU_UNUSED void
tu_rmrf(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* Redirects fd (1 or 2) to a temp file until tu_capture_end(). */
struct tu_capture {
	int fd, saved, tmp;
};

static TU_UNUSED void
tu_capture_begin(struct tu_capture *c, int fd)
{
	char path[] = "/tmp/kasir-capture-XXXXXX";

	fflush(NULL);
	c->fd = fd;
	c->tmp = mkstemp(path);
	if (c->tmp < 0) {
		perror("mkstemp");
		abort();
	}
	unlink(path);
	c->saved = dup(fd);
	dup2(c->tmp, fd);
}

/* Restores fd; returns what was written (caller frees). */
static TU_UNUSED char *
tu_capture_end(struct tu_capture *c)
{
	off_t len;
	char *buf;

	fflush(NULL);
	dup2(c->saved, c->fd);
	close(c->saved);
	len = lseek(c->tmp, 0, SEEK_END);
	buf = calloc(1, (size_t)len + 1);
	if (buf == NULL || pread(c->tmp, buf, (size_t)len, 0) != len) {
		perror("capture");
		abort();
	}
	close(c->tmp);
	return buf;
}

#endif
