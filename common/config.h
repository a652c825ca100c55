/*
 * config.h - one YAML file, parsed whole into one struct from a table.
 *
 * The file is read with libyaml into a small node tree (bounded: 1 MiB,
 * depth 16, 10,000 nodes), then every mapping key is looked up in a table
 * of struct conf_key { key, type, offset, ... }.  Unknown keys, wrong types,
 * out-of-range values and missing required keys are all reported as
 * "FILE:LINE: message"; any error rejects the whole file and the struct is
 * left zeroed (nothing half-applied).  Then the table's finish hook checks
 * what no single key can (CONF_END(fn), conf_finish_fn below).
 *
 * Nested mappings use dotted keys in the table ("database.url").  Lists and
 * anything else structured use CONF_CUSTOM with a parse callback that gets
 * the YAML node; conf_apply_table() lets a callback parse a list of mappings
 * into an array of structs with a sub-table (see conf_parse_list()).
 *
 * Secrets never appear in the YAML: keys of type CONF_SECRET name a file
 * (absolute path), or a bare credential name looked up in
 * $CREDENTIALS_DIRECTORY (systemd LoadCredential=).  The file is read at
 * load time, must not be readable or writable by "other" (mode & 007 == 0),
 * at most 4 KiB, trailing newlines stripped.  The value is stored in a
 * struct conf_secret and is never logged.
 */
#ifndef KASIR_CONFIG_H
#define KASIR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum conf_type {
	CONF_STRING,   /* char * (malloc'd; freed by conf_free) */
	CONF_INT,      /* int64_t, range [min, max] */
	CONF_BOOL,     /* bool: true/false/yes/no */
	CONF_DURATION, /* int64_t milliseconds: "500ms" "30s" "10m" "2h" "1d"; range [min, max] ms */
	CONF_SIZE,     /* int64_t bytes: "64KiB" "1MiB" or plain number; range [min, max] */
	CONF_SECRET,   /* struct conf_secret */
	CONF_CUSTOM,   /* parse callback */
	CONF_INCLUDE,  /* splice table .sub at base+offset, keys prefixed by .key ("" = root) */
};

enum conf_node_kind { CONF_NODE_SCALAR, CONF_NODE_MAP, CONF_NODE_SEQ };

/* A node of the parsed YAML tree.  Owned by the loader; valid only during
 * the parse callbacks. */
struct conf_node {
	enum conf_node_kind kind;
	int line;		  /* 1-based line in the file */
	const char *value;	  /* SCALAR: its text */
	const char *key;	  /* when a child of a MAP: its key */
	struct conf_node *child;  /* MAP/SEQ: first child */
	struct conf_node *next;	  /* next sibling */
};

struct conf_secret {
	char *value; /* NUL-terminated; wiped and freed by conf_free */
	size_t len;
	char *origin; /* the path it was read from (safe to log) */
};

/* Error sink: collects every "FILE:LINE: message". */
struct conf_errors;
void conf_error(struct conf_errors *errs, const struct conf_node *at,
		const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same, at the line of dotted key under map (a table's mapping, as
 * given to a finish hook); without a line when the key is absent. */
void conf_error_key(struct conf_errors *errs, const struct conf_node *map,
		    const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct conf_key;
typedef int (*conf_parse_fn)(const struct conf_node *node, void *field,
			     struct conf_errors *errs);
typedef void (*conf_free_fn)(void *field);
/*
 * A table's cross-field checks: what no single key can say ("jobs.lease
 * must be at least twice the longest provider timeout", "this daemon
 * publishes a stream, so stream.publish is required").  It runs once every
 * key of the table applied without an error (defaults included), with base
 * the struct the table filled and map the mapping it was read from (NULL
 * for an empty file); it may also derive fields from the ones it checks.
 * It reports with conf_error_key() and returns 0, or KASIR_ECONFIG /
 * -ENOMEM with the errors recorded; then the load fails like any other
 * error.  Because conf_load() runs it, --check-config and a start run the
 * same checks: a check that needs only the file belongs here, not in
 * main().
 */
typedef int (*conf_finish_fn)(void *base, const struct conf_node *map,
			      struct conf_errors *errs);

struct conf_key {
	const char *key;     /* dotted path relative to the table's root */
	enum conf_type type;
	size_t offset;	     /* offsetof(struct, field) */
	bool required;
	int64_t min, max;    /* CONF_INT, CONF_DURATION, CONF_SIZE; 0,0 = no bound */
	conf_parse_fn parse; /* CONF_CUSTOM */
	conf_free_fn free;   /* CONF_CUSTOM: frees what parse allocated */
	const char *defval;  /* textual default applied when absent (not for SECRET) */
	const struct conf_key *sub; /* CONF_INCLUDE */
	/* CONF_CUSTOM: sizeof the field.  conf_load zeroes the field before
	 * parsing and after a failure, so the callback and .free always see
	 * a zeroed or fully parsed field.  0 is allowed only when the caller
	 * zeroes the whole struct before conf_load (conf_free would otherwise
	 * run .free on garbage when the key is absent). */
	size_t size;
	/* Only on the terminating entry (key NULL): the table's cross-field
	 * check, or NULL.  Write CONF_END(fn) or {.key = NULL}. */
	conf_finish_fn finish;
};
/* Tables end with an entry whose key is NULL. */
#define CONF_END(fn) {.key = NULL, .finish = (fn)}

/*
 * Loads FILE into the struct at base according to table, then runs the
 * finish hooks (those of its CONF_INCLUDE sub-tables first, then the
 * table's own; a list's sub-table's for each item).  On success
 * returns 0; on failure returns KASIR_ECONFIG, the struct is all zero and
 * *ret_errors (caller frees with free()) holds the messages, one per line,
 * each "FILE:LINE: message".
 */
int conf_load(const char *file, const struct conf_key *table, void *base,
	      char **ret_errors);
/* Frees everything conf_load stored in base and zeroes it.  base may be a
 * zeroed struct. */
void conf_free(const struct conf_key *table, void *base);

/* For CONF_CUSTOM callbacks: applies table to a MAP node into base.
 * Returns 0 or KASIR_ECONFIG (errors already recorded). */
int conf_apply_table(const struct conf_node *map, const struct conf_key *table,
		     void *base, struct conf_errors *errs);

/* A list of mappings parsed into a malloc'd array of structs. */
struct conf_list {
	void *items; /* elem_size * count bytes */
	size_t count;
};
/* Parses a SEQ of MAPs with sub-table into list (max_items bound).
 * Use from a CONF_CUSTOM callback; free with conf_list_free(). */
int conf_parse_list(const struct conf_node *seq, const struct conf_key *table,
		    size_t elem_size, size_t max_items, struct conf_list *list,
		    struct conf_errors *errs);
void conf_list_free(const struct conf_key *table, size_t elem_size,
		    struct conf_list *list);

/* Scalar parsers, shared with CONF_CUSTOM callbacks.  0 or -EINVAL/-ERANGE. */
int conf_parse_duration(const char *s, int64_t *ret_ms);
int conf_parse_size(const char *s, int64_t *ret_bytes);
/* Reads a secret as described above (path or credential name). */
int conf_read_secret(const char *name, struct conf_secret *ret, char *why,
		     size_t why_len);
void conf_secret_wipe(struct conf_secret *s);

/*
 * Standard command line of every daemon:
 *   kasir-X --config FILE        load FILE and run (also -c FILE,
 *                                --config=FILE)
 *   kasir-X --check-config FILE  print "configuration OK" (exit 0) or the
 *                                errors on stderr (exit 1); also
 *                                --check-config=FILE
 *   kasir-X --version
 * Both load with conf_load(), finish hooks included: a file --check-config
 * passes is one the daemon accepts, whichever spelling was used.
 * Returns true when the daemon should run: base holds the loaded config.
 * Returns false when the process should exit with *ret_exit, after having
 * printed what was asked (or the usage / the config errors).
 */
bool conf_cli(int argc, char **argv, const char *progname,
	      const struct conf_key *table, void *base, int *ret_exit);

#endif
