/*
 * Memory that may have held a secret is scrubbed before it goes back to
 * the allocator: a core dump, a debugger, or a later heap bug reading
 * freed blocks then finds no password. OpenSSL's allocations are scrubbed
 * through its hooks (its record buffers hold decrypted plaintext); Expat's
 * through its memory handling suite (its input buffer and pools hold every
 * byte of a stream), which also serves xml.c's element trees; buf.c and
 * the legs' read buffer scrub with secmem_wipe.
 */
#ifndef XI_SECMEM_H
#define XI_SECMEM_H

#include <stddef.h>

/* Scrubs n bytes at p; never optimised away. Every scrub in the proxy goes
 * through here. */
void secmem_wipe(void *p, size_t n);

/* Makes every block OpenSSL frees or moves scrubbed first. Must run before
 * any other OpenSSL call (OpenSSL refuses new hooks once it has allocated).
 * Returns 0, or -1 if it was too late. */
int secmem_init(void);

/*
 * malloc, realloc and free whose realloc and free scrub the old block.
 * A block from secmem_malloc or secmem_realloc goes back only through
 * secmem_realloc or secmem_free (a hidden header in front of it keeps its
 * size). Alignment is that of malloc. secmem_realloc(NULL, n) is
 * secmem_malloc(n); on failure it returns NULL and leaves p untouched.
 */
void *secmem_malloc(size_t n);
void *secmem_realloc(void *p, size_t n);
void secmem_free(void *p);

#endif
