/*
 * What the benchmark's two C tools (loadgen.c, fastupstream.c) both need
 * of the wire: base64 for SASL payloads and the attributes of a SCRAM
 * message. One copy, linked into each (tools/toolwire.c).
 */
#ifndef XI_TOOLWIRE_H
#define XI_TOOLWIRE_H

#include <stddef.h>

/* Base64 of src[0, n) into dst (NUL-terminated); its length, or 0 when it
 * does not fit in cap. */
size_t toolwire_b64_enc(char *dst, size_t cap, const unsigned char *src, size_t n);
/* Decodes n bytes of base64 text into dst (NUL-terminated); the length,
 * or -1 for text that is not base64 or does not fit in cap. */
int toolwire_b64_dec(unsigned char *dst, size_t cap, const char *src, size_t n);
/* The value of "k=" in the NUL-terminated SCRAM message msg (its length in
 * *len), or NULL. */
const char *toolwire_scram_attr(const char *msg, char k, size_t *len);

#endif
