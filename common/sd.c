/*
 * sd.c - systemd service notification (sd.h).
 *
 * libsystemd's sd_notify() is already a no-op without $NOTIFY_SOCKET.
 * STATUS= texts are single-line: newlines would start a new assignment,
 * so they are replaced by spaces.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "sd.h"

#define SD_STATUS_MAX 256

static void
one_line(char *s)
{
	for (; *s != '\0'; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

void
kasir_sd_ready(const char *status)
{
	char buf[SD_STATUS_MAX];

	if (status == NULL) {
		(void)sd_notify(0, "READY=1");
		return;
	}
	snprintf(buf, sizeof(buf), "%s", status);
	one_line(buf);
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s", buf);
}

void
kasir_sd_status(const char *fmt, ...)
{
	char buf[SD_STATUS_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	one_line(buf);
	(void)sd_notifyf(0, "STATUS=%s", buf);
}

void
kasir_sd_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1");
}

void
kasir_sd_watchdog(void)
{
	(void)sd_notify(0, "WATCHDOG=1");
}

int64_t
kasir_sd_watchdog_ms(void)
{
	uint64_t usec = 0;

	/* > 0: enabled for this process ($WATCHDOG_PID checked). */
	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return (int64_t)(usec / 1000);
}
