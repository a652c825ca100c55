/*
 * config_cli.c - the command line every daemon shares (config.h:
 * conf_cli): --config, --check-config, both with FILE as the next word or
 * after "=", --version, --help.  Both load with conf_load(), so a file
 * --check-config passes is one the daemon accepts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"
#include "err.h"

static void
usage(FILE *out, const char *progname)
{
	fprintf(out,
	        "usage: %s --config FILE\n"
	        "       %s --check-config FILE\n"
	        "       %s --version\n"
	        "       %s --help\n",
	        progname, progname, progname, progname);
}

bool
conf_cli(int argc, char **argv, const char *progname,
         const struct conf_key *table, void *base, int *ret_exit)
{
	const char *file = NULL;
	bool check = false;
	char *errors = NULL;

	conf_table_zero(table, base);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		bool is_config = false, is_check = false;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout, progname);
			*ret_exit = 0;
			return false;
		}
		if (strcmp(a, "--version") == 0) {
			printf("%s %s\n", progname, KASIR_VERSION);
			*ret_exit = 0;
			return false;
		}
		if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0)
			is_config = true;
		else if (strcmp(a, "--check-config") == 0)
			is_check = true;
		else if (strncmp(a, "--config=", 9) == 0)
			is_config = true, v = a + 9;
		else if (strncmp(a, "--check-config=", 15) == 0)
			is_check = true, v = a + 15;
		if (!is_config && !is_check) {
			fprintf(stderr, "%s: unknown argument '%s'\n", progname,
			        a);
			usage(stderr, progname);
			*ret_exit = 2;
			return false;
		}
		if (v == NULL) {
			if (i + 1 >= argc) {
				fprintf(stderr, "%s: %s needs a FILE\n",
				        progname, a);
				usage(stderr, progname);
				*ret_exit = 2;
				return false;
			}
			v = argv[++i];
		}
		if (file != NULL) {
			fprintf(stderr, "%s: only one configuration file\n",
			        progname);
			*ret_exit = 2;
			return false;
		}
		file = v;
		check = is_check;
	}
	if (file == NULL) {
		usage(stderr, progname);
		*ret_exit = 2;
		return false;
	}
	if (conf_load(file, table, base, &errors) < 0) {
		fputs(errors ? errors : "configuration rejected\n", stderr);
		free(errors);
		*ret_exit = 1;
		return false;
	}
	if (check) {
		conf_free(table, base);
		printf("configuration OK\n");
		fflush(stdout);
		*ret_exit = 0;
		return false;
	}
	return true;
}
