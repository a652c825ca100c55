/*
 * sd.h - systemd service notification through libsystemd.
 *
 * All functions are no-ops when $NOTIFY_SOCKET is unset.  The watchdog
 * should be fed only from the daemon's main loop after it verified its
 * database connection is healthy: a wedged loop or a lost database stops
 * the pings and systemd restarts the unit.
 */
#ifndef KASIR_SD_H
#define KASIR_SD_H

#include <stdbool.h>
#include <stdint.h>

void kasir_sd_ready(const char *status);
void kasir_sd_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kasir_sd_stopping(void);
void kasir_sd_watchdog(void);
/* Watchdog interval in ms configured by systemd (WATCHDOG_USEC), 0 if none;
 * feed it at half of this. */
int64_t kasir_sd_watchdog_ms(void);

#endif
