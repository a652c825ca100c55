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

int
conf_read_secret(const char *name, struct conf_secret *ret, char *why,
                 size_t why_len)
{
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
		         "'%.*s' must be an absolute path or a credential name",
		         CONF_SHOW_MAX, name);
		return -EINVAL;
	} else {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");
		if (!credential_name_valid(name)) {
			snprintf(why, why_len, "invalid credential name '%.*s'",
			         CONF_SHOW_MAX, name);
			return -EINVAL;
		}
		if (dir == NULL || dir[0] != '/') {
			snprintf(why, why_len,
			         "credential '%s' named but "
			         "$CREDENTIALS_DIRECTORY is not set (use "
			         "LoadCredential= or an absolute path)",
			         name);
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
		snprintf(why, why_len, "cannot open %s: %s", path,
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
