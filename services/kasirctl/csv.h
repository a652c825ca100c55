/*
 * csv.h - one CSV text cell, safe to open in a spreadsheet.
 *
 * Every text cell is quoted (RFC 4180: "" inside).  A cell that a
 * spreadsheet could run as a formula is guarded the OWASP way, with a '
 * first inside the quotes: when its first character, or the first
 * character after any separator in it (',' ';' or tab: the file may be
 * opened in a locale that splits on ';', the usual one in Indonesia), is
 * = + - @, tab or CR.  So "+6281..." reads '+6281... and "Budi;=1+1"
 * reads 'Budi;=1+1.
 */
#ifndef KASIRCTL_CSV_H
#define KASIRCTL_CSV_H

#include <stdbool.h>
#include <stdio.h>

/* True when s needs the leading ' (see above). */
bool csv_needs_guard(const char *s);
/* Writes s as one quoted, guarded cell to f. */
void csv_write_text(FILE *f, const char *s);

#endif
