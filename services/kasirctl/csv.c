/*
 * csv.c - one CSV text cell, quoted and guarded against formula
 * injection (csv.h).
 */
#include <string.h>

#include "csv.h"

/* What a spreadsheet may take as the start of a formula. */
static bool
formula_start(char c)
{
	return c != '\0' && strchr("=+-@\t\r", c) != NULL;
}

bool
csv_needs_guard(const char *s)
{
	if (formula_start(s[0]))
		return true;
	for (; *s != '\0'; s++)
		if ((*s == ',' || *s == ';' || *s == '\t') &&
		    formula_start(s[1]))
			return true;
	return false;
}

void
csv_write_text(FILE *f, const char *s)
{
	fputc('"', f);
	if (csv_needs_guard(s))
		fputc('\'', f);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}
