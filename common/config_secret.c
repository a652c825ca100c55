/*
 * config_secret.c - secrets read from a file or a systemd credential
 * (config.h: CONF_SECRET, conf_read_secret).  Bounded, private (mode &
 * 007 == 0), never logged, wiped when freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_impl.h"
#include "err.h"
#include "util.h"

void
conf_secret_wipe(struct conf_secret *s)
{
	if (s == NULL)
		return;
	if (s->value != NULL) {
		explicit_bzero(s->value, s->len);
		free(s->value);
	}
	free(s->origin);
	memset(s, 0, sizeof(*s));
}

/* A credential name: one path component, no dot-dot tricks. */
static bool
credential_name_valid(const char *s)
{
	if (s[0] == '\0' || s[0] == '.' || strlen(s) > NAME_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
		      *s == '-' || *s == '@' || *s == ':'))
			return false;
	return true;
}

/* A relative name as error messages show it.  A value pasted where the
 * file or credential name goes is the secret itself, and the whole of it
 * went into the error, to stderr and the journal (an outside attack,
 * 2026-12-07).  A name shaped like the credential names kasir's units use
 * ("db-kasir_ingest", "midtrans-server-key": lower case, digits and a
 * separator, at most 40 characters) is shown whole, so that an operator
 * sees which credential is missing; anything else (a Midtrans key has
 * capitals, a hex or base64 token no separator or capitals) only by its
 * first three characters and its length. */
static const char *
name_shown(const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	bool sep = strpbrk(name, "-_.") != NULL;

	if (n <= 40 && sep &&
	    strspn(name, "abcdefghijklmnopqrstuvwxyz"
	                 "0123456789-_.") == n)
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%.3s... (%zu characters)", name, n);
	return buf;
}

int
conf_read_secret(const char *name, struct conf_secret *ret, char *why,
                 size_t why_len)
{
	char shown[64];
	char path[PATH_MAX], buf[CONF_SECRET_MAX + 1];
	struct stat st;
	size_t len = 0;
	int fd, r;

	if (name == NULL || name[0] == '\0') {
		snprintf(why, why_len, "no file or credential name given");
		return -EINVAL;
	}
	if (name[0] == '/') {
		if (strlen(name) >= sizeof(path)) {
			snprintf(why, why_len, "path too long");
			return -ENAMETOOLONG;
		}
		kasir_strlcpy(path, name, sizeof(path));
	} else if (strchr(name, '/') != NULL) {
		snprintf(why, why_len,
		         "'%s' must be an absolute path or a credential name",
		         name_shown(name, shown, sizeof(shown)));
		return -EINVAL;
	} else {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");
		if (!credential_name_valid(name)) {
			snprintf(why, why_len, "invalid credential name '%s'",
			         name_shown(name, shown, sizeof(shown)));
			return -EINVAL;
		}
		if (dir == NULL || dir[0] != '/') {
			snprintf(why, why_len,
			         "credential '%s' named but "
			         "$CREDENTIALS_DIRECTORY is not set (use "
			         "LoadCredential= or an absolute path)",
			         name_shown(name, shown, sizeof(shown)));
			return -ENOENT;
		}
		r = snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (r < 0 || (size_t)r >= sizeof(path)) {
			snprintf(why, why_len, "path too long");
			return -ENAMETOOLONG;
		}
	}

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		if (name[0] == '/')
			snprintf(why, why_len, "cannot open %s: %s", path,
			         strerror(-r));
		else
			snprintf(why, why_len,
			         "cannot open credential '%s' in "
			         "$CREDENTIALS_DIRECTORY: %s",
			         name_shown(name, shown, sizeof(shown)),
			         strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, why_len, "cannot stat %s: %s", path,
		         strerror(-r));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		snprintf(why, why_len, "%s is not a regular file", path);
		goto out_close;
	}
	if ((st.st_mode & 007) != 0) {
		r = -EPERM;
		snprintf(why, why_len,
		         "%s is accessible by others (mode %04o); "
		         "run chmod o-rwx on it",
		         path, (unsigned)(st.st_mode & 07777));
		goto out_close;
	}
	if (st.st_size > CONF_SECRET_MAX) {
		r = -EFBIG;
		snprintf(why, why_len, "%s is larger than %d bytes", path,
		         CONF_SECRET_MAX);
		goto out_close;
	}
	/* Read to EOF (the size may change under us), bounded by buf. */
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(why, why_len, "cannot read %s: %s", path,
			         strerror(-r));
			goto out_wipe;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONF_SECRET_MAX) {
		r = -EFBIG;
		snprintf(why, why_len, "%s is larger than %d bytes", path,
		         CONF_SECRET_MAX);
		goto out_wipe;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len == 0) {
		r = -EINVAL;
		snprintf(why, why_len, "%s is empty", path);
		goto out_wipe;
	}
	struct conf_secret s = {.len = len};
	if ((s.value = malloc(len + 1)) == NULL ||
	    (s.origin = strdup(path)) == NULL) {
		free(s.value);
		r = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		goto out_wipe;
	}
	memcpy(s.value, buf, len);
	s.value[len] = '\0';
	*ret = s;
	r = 0;
out_wipe:
	explicit_bzero(buf, sizeof(buf));
out_close:
	close(fd);
	return r;
}
