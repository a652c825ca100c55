/*
 * json_string.h - control characters in JSON strings, checked on the raw
 * text.
 *
 * cJSON decodes "\u0000" into a NUL byte and every reader of its C string
 * then stops there ("bikin-film-pendek\u0000-premium" reads as
 * "bikin-film-pendek"), so this can only be seen before or beside the
 * parse.  kasir-ingest (notification.c) scans each string of a
 * notification with json_scan_string(); kasir-order's API checks a whole
 * request body with json_find_control() and names the field.
 */
#ifndef KASIR_JSON_STRING_H
#define KASIR_JSON_STRING_H

#include <stdbool.h>
#include <stddef.h>

enum json_string_error {
	JSON_STRING_MALFORMED = -1, /* unterminated, bad escape, raw < 0x20 */
	JSON_STRING_NUL = -2,       /* the escape \u0000 */
	JSON_STRING_CONTROL = -3,   /* another control character */
	JSON_STRING_SURROGATE = -4, /* unpaired surrogate escape */
};

/*
 * Scans the JSON string literal whose opening quote is at *pp (text ends
 * at end) and on success moves *pp past the closing quote.  Always
 * refused: a raw byte below 0x20 (invalid JSON), a bad or short escape,
 * an unpaired surrogate escape, and \u0000.  Unless allow_controls, also
 * every other control character: the escapes \b \f \n \r \t, \u0001 to
 * \u001f, \u007f to \u009f, a raw DEL (0x7f) byte and U+0080 to U+009F
 * written raw in UTF-8.
 * Returns 0 or a negative enum json_string_error; *ret_why (may be NULL)
 * then names the reason in a few words.  Does not check UTF-8.
 */
int json_scan_string(const unsigned char **pp, const unsigned char *end,
                     bool allow_controls, const char **ret_why);

/*
 * Walks the JSON text (already accepted by a parser) and checks every
 * string, key or value, with json_scan_string(allow_controls = false).
 * Returns 0 when none has a control character; KASIR_EREJECT with the
 * dotted path of the first offending member ("customer.name",
 * "items[2].sku"; a bad key is named by its parent's path plus ".?") in
 * ret_field (truncated to field_len); -EINVAL when the text is not JSON
 * after all.  ret_field is a string (maybe empty) whatever it returns.
 */
int json_find_control(const char *text, size_t len, char *ret_field,
                      size_t field_len);

#endif
