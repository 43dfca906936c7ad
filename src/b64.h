/* Base64 (RFC 4648, standard alphabet, padded) for SASL payloads. */
#ifndef XI_B64_H
#define XI_B64_H

#include <stddef.h>

/*
 * Decodes len bytes of src into dst (room for at least len / 4 * 3 + 3
 * bytes). Whitespace is skipped (XMPP allows line breaks in payloads).
 * Returns the decoded length, or -1 for any other character, bad padding
 * or a truncated quantum. The single "=" used by XMPP for an empty payload
 * decodes to length 0.
 */
long b64_decode(const char *src, size_t len, unsigned char *dst);

/* Encodes len bytes into dst (room for 4 * ((len + 2) / 3) + 1), NUL
 * terminated. Returns the encoded length. */
size_t b64_encode(const unsigned char *src, size_t len, char *dst);

#endif
