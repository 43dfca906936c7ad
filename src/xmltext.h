/*
 * Plain character data, found fast: runs of bytes that are character data
 * wherever they stand in an element's content (or a CDATA section), so the
 * XML layer can count them toward the stanza limit and relay them without
 * handing them to Expat's tokenizer, which costs about a nanosecond a byte.
 *
 * A plain byte is ASCII 0x20-0x7F other than '<' and '&' (which start
 * markup or a reference) and ']' (the start of "]]>", which content may
 * not hold). Control characters (tab, CR, LF and the ones XML forbids) and
 * every byte of a multi-byte UTF-8 character are not plain: Expat checks
 * those (line ends, encoding, forbidden characters).
 */
#ifndef XI_XMLTEXT_H
#define XI_XMLTEXT_H

#include <stdbool.h>
#include <stddef.h>

bool xmltext_plain(unsigned char c);
/* The length of the run of plain bytes at the start of p[0..n). */
size_t xmltext_plain_run(const char *p, size_t n);
/* The offset of the first run of at least min plain bytes in p[0..n) (a
 * run cut by the end of p counts only if it is that long already), or n
 * if there is none. */
size_t xmltext_next_run(const char *p, size_t n, size_t min);
/* The offset just past the first '>' or ';' in p[0..n) (where a tag or a
 * reference that a run of plain bytes began inside may end), or 0 if
 * there is none. */
size_t xmltext_token_end(const char *p, size_t n);

#endif
