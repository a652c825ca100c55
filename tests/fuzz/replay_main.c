/*
 * replay_main.c - a main() for the fuzz targets built as normal programs
 * (gcc, no libFuzzer): feeds every file named on the command line, or
 * every regular file in a directory named there, once to
 * LLVMFuzzerTestOneInput().  CI replays the seeds and the regression
 * inputs (tests/fuzz/regressions/<target>/) this way, so a crash once
 * found and fixed stays fixed without a long fuzzing run.
 *
 * Each input is copied into a heap buffer of exactly its size (as
 * libFuzzer does), so ASan builds see any read past the end.  A target
 * signals a broken promise with abort(); a crash kills the process and
 * ctest reports the test failed.  Exit 0 only when at least one input ran.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_INPUT_MAX (16 * 1024 * 1024) /* bigger inputs are refused */
#define REPLAY_PATH_MAX  4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
run_file(const char *path, unsigned long *count)
{
	struct stat sb;
	uint8_t *buf;
	FILE *f;
	size_t n;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &sb) < 0 || sb.st_size > REPLAY_INPUT_MAX) {
		fprintf(stderr, "replay: %s: unreadable or above %d bytes\n",
		        path, REPLAY_INPUT_MAX);
		fclose(f);
		return -1;
	}
	/* exactly st_size bytes; malloc(0) may be NULL, so at least 1 */
	buf = malloc(sb.st_size > 0 ? (size_t)sb.st_size : 1);
	if (buf == NULL) {
		fclose(f);
		return -1;
	}
	n = fread(buf, 1, (size_t)sb.st_size, f);
	fclose(f);
	if (n != (size_t)sb.st_size) {
		fprintf(stderr, "replay: %s: short read\n", path);
		free(buf);
		return -1;
	}
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
	(void)LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	(*count)++;
	return 0;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of dir in name order (reproducible runs). */
static int
run_dir(const char *dir, unsigned long *count)
{
	char **names = NULL, path[REPLAY_PATH_MAX];
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **p = realloc(names, ncap * sizeof(*names));
			if (p == NULL) {
				rc = -1;
				break;
			}
			names = p;
			cap = ncap;
		}
		if ((names[n] = strdup(de->d_name)) == NULL) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat sb;
		int w = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);

		if (rc == 0 && w > 0 && (size_t)w < sizeof(path) &&
		    stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
		    run_file(path, count) < 0)
			rc = -1;
		free(names[i]);
	}
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	unsigned long count = 0;
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		struct stat sb;

		if (argv[i][0] == '-')
			continue; /* libFuzzer flags: ignored */
		if (stat(argv[i], &sb) < 0) {
			/* an absent regression directory is just empty */
			if (errno == ENOENT)
				continue;
			fprintf(stderr, "replay: %s: %s\n", argv[i],
			        strerror(errno));
			rc = 1;
		} else if (S_ISDIR(sb.st_mode)) {
			if (run_dir(argv[i], &count) < 0)
				rc = 1;
		} else if (run_file(argv[i], &count) < 0) {
			rc = 1;
		}
	}
	fprintf(stderr, "replay: %lu inputs, %s\n", count,
	        rc == 0 && count > 0 ? "all passed" : "FAILED");
	if (count == 0)
		fprintf(stderr, "replay: no input found\n");
	return rc == 0 && count > 0 ? 0 : 1;
}
