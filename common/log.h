/*
 * log.h - structured logging.
 *
 * Under systemd (stderr connected to the journal, $JOURNAL_STREAM set) every
 * line goes to the journal through sd_journal_send() with MESSAGE=,
 * PRIORITY=, SYSLOG_IDENTIFIER= and the structured fields given by the
 * caller (ORDER_ID=, STREAM=, SEQ=, ...), so `journalctl ORDER_ID=X` follows
 * one order across every service.  Otherwise one logfmt line is written to
 * stderr:  ts=... level=info proc=kasir-order msg="..." ORDER_ID=...
 *
 * Rules (STYLE.md): lower-case messages without trailing period, log an
 * error once where it is handled, never log a secret or a signature.
 * Library code in common/ logs at debug level at most.
 * Thread-safe.
 */
#ifndef KASIR_LOG_H
#define KASIR_LOG_H

#include <stdint.h>
#include <syslog.h> /* LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG */

struct log_field {
	const char *key;   /* upper-case journal field name, e.g. "ORDER_ID" */
	const char *value; /* NULL values are skipped */
};

/* Builds a NULL-terminated field list in place: LOG_F({"ORDER_ID", id}). */
#define LOG_F(...) ((const struct log_field[]){__VA_ARGS__, {NULL, NULL}})

/* Sets the process name and the most verbose level written.  Decides once
 * whether to use the journal.  Call before any other log function. */
void log_open(const char *ident, int max_level);
void log_set_level(int max_level);
/* Parses "debug|info|notice|warning|err"; returns -EINVAL otherwise. */
int log_level_parse(const char *s, int *ret_level);

void log_fields(int prio, const struct log_field *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_err(...)	 log_fields(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_fields(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...)	 log_fields(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...)	 log_fields(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)	 log_fields(LOG_DEBUG, NULL, __VA_ARGS__)
/* Shorthand for the most common field. */
#define log_order(prio, order_id, ...)                                         \
	log_fields((prio), LOG_F({"ORDER_ID", (order_id)}), __VA_ARGS__)

#endif
