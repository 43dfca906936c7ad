/*
 * libFuzzer target for streamfeatures.c behind xml.c: the input is the
 * inside of a server's <stream:features>, wrapped in a stream header and
 * the features element, parsed with xml.c, read with
 * streamfeatures_parse() and written back with streamfeatures_write()
 * (with the stream prefix and with none). The written features are
 * parsed again and must say the same: the same starttls state and
 * mechanisms (SASL1 and SASL2), nothing the proxy strips, the same kept
 * children. Each mechanism list is checked on its own: valid names, each
 * once, at most MAX_MECHANISMS, and its truncated flag set only when that
 * list is full and the input offered it more.
 *
 * Build and run: tests/fuzz/run SECONDS features
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "buf.h"
#include "streamfeatures.h"
#include "xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HDR                                                                                   \
	"<stream:stream xmlns='jabber:client' xmlns:stream='" XML_NS_STREAMS "' id='f' "           \
	"from='lab.test' version='1.0' xml:lang='en'>"

struct fuzz_ctx {
	int features; /* features elements seen */
	struct streamfeatures f;
	size_t fast_elems, tls0rtt; /* in the last features: FAST elements, tls-0rtt attributes */
};

/* Counts FAST elements (any version) and their tls-0rtt attributes where
 * a client looks for FAST: among the features, in SASL2's
 * <authentication> and in its <inline>. What the proxy writes may hold
 * there only its own rebuilt <fast> inline, never tls-0rtt. */
static void fuzz_count_fast_in(struct fuzz_ctx *x, const struct xml_elem *e, int depth)
{
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
		if (strncmp(c->ns, "urn:xmpp:fast:", 14) == 0) {
			x->fast_elems++;
			for (size_t i = 0; i < c->nattrs; i++)
				if (strcmp(c->attrs[i].name, "tls-0rtt") == 0)
					x->tls0rtt++;
		}
		if (depth == 0 && xml_is(c, XML_NS_SASL2, "authentication"))
			fuzz_count_fast_in(x, c, 1);
		else if (depth == 1 && xml_is(c, XML_NS_SASL2, "inline"))
			fuzz_count_fast_in(x, c, 2);
	}
}

static void fuzz_count_fast(struct fuzz_ctx *x, const struct xml_elem *e)
{
	fuzz_count_fast_in(x, e, 0);
}

static void fuzz_open(void *ctx, const struct xml_elem *h, uint64_t end)
{
	(void)ctx, (void)h, (void)end;
}

static void fuzz_close(void *ctx)
{
	(void)ctx;
}

/* The contract of one bounded mechanism list: at most MAX_MECHANISMS
 * valid names, each once; truncated only with the list full. */
static void fuzz_check_list(char *const *list, size_t n, bool truncated)
{
	if (n > MAX_MECHANISMS || (truncated && n != MAX_MECHANISMS))
		abort();
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(list[i]);
		if (len == 0 || len > MAX_MECH_NAME ||
		    strspn(list[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != len)
			abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(list[i], list[j]) == 0)
				abort();
	}
}

/* The contract of a parsed struct streamfeatures. */
static void fuzz_check(const struct streamfeatures *f)
{
	fuzz_check_list(f->mechs, f->nmechs, f->mechs_truncated);
	fuzz_check_list(f->sasl2_mechs, f->nsasl2_mechs, f->sasl2_truncated);
	fuzz_check_list(f->fast_mechs, f->nfast_mechs, f->fast_truncated);
	if ((f->nsasl2_mechs > 0 || f->sasl2_truncated) && !f->sasl2)
		abort();
	if ((f->nfast_mechs > 0 || f->fast_truncated) && !(f->fast && f->sasl2_inline && f->sasl2))
		abort();
	if (f->ninline > MAX_INLINE || (f->fast && f->ninline == 0))
		abort();
	for (size_t i = 0; i < f->ninline; i++)
		if (strlen(f->inline_names[i]) > MAX_INLINE_NAME ||
		    strspn(f->inline_names[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					       "0123456789-_") != strlen(f->inline_names[i]))
			abort(); /* a name the log would carry as the server wrote it */
	if (f->starttls != SF_STARTTLS_NONE && f->starttls != SF_STARTTLS_OFFERED &&
	    f->starttls != SF_STARTTLS_REQUIRED)
		abort();
	if (f->kept == NULL || f->sasl2_kept == NULL || f->inline_kept == NULL)
		abort();
}

/* The <mechanism> children of e's children name/ns: a bound on what one
 * list can have been offered, counted without the parser's rules. */
static size_t fuzz_offered(const struct xml_elem *e, const char *ns, const char *name)
{
	size_t n = 0;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next)
		if (xml_is(c, ns, name))
			for (const struct xml_elem *m = c->children; m != NULL; m = m->next)
				n += xml_is(m, ns, "mechanism");
	return n;
}

/* Fires for each depth-1 element; only features are read. Each list's
 * flag must come from that list: one with MAX_MECHANISMS candidates or
 * fewer in the input cannot have been cut, whatever the other holds. */
static void fuzz_element(void *ctx, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	struct fuzz_ctx *x = ctx;
	(void)start, (void)end;
	if (!xml_is(e, XML_NS_STREAMS, "features"))
		return;
	x->features++;
	x->fast_elems = x->tls0rtt = 0;
	fuzz_count_fast(x, e);
	if (streamfeatures_parse(&x->f, e) != 0)
		abort();
	fuzz_check(&x->f);
	size_t n1 = fuzz_offered(e, XML_NS_SASL, "mechanisms");
	size_t n2 = fuzz_offered(e, XML_NS_SASL2, "authentication");
	if (x->f.nmechs > n1 || (x->f.mechs_truncated && n1 <= MAX_MECHANISMS))
		abort();
	if (x->f.nsasl2_mechs > n2 || (x->f.sasl2_truncated && n2 <= MAX_MECHANISMS))
		abort();
}

static const struct xml_handler fuzz_handler = {fuzz_open, fuzz_element, fuzz_close};

/* Parses header + body into x; returns the xml error. */
static enum xml_error fuzz_parse(struct fuzz_ctx *x, const char *hdr, size_t hlen,
				 const char *body, size_t blen)
{
	struct xml_parser *p = xml_new(&fuzz_handler, x, 16u << 20);
	if (p == NULL)
		abort();
	size_t used;
	enum xml_error err = xml_feed(p, hdr, hlen, &used);
	if (err == XML_OK)
		err = xml_feed(p, body, blen, &used);
	xml_free(p);
	return err;
}

static bool fuzz_same_buf(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && memcmp(buf_head(a), buf_head(b), a->len) == 0;
}

static bool fuzz_same_kept(const struct streamfeatures *a, const struct streamfeatures *b)
{
	/* <authentication> is written only with a mechanism to offer */
	return fuzz_same_buf(a->kept, b->kept) &&
	       (a->nsasl2_mechs == 0 || (fuzz_same_buf(a->sasl2_kept, b->sasl2_kept) &&
					 fuzz_same_buf(a->inline_kept, b->inline_kept)));
}

/* Writes f as the proxy would (everything it keeps) and checks the result. */
static void fuzz_roundtrip(const struct fuzz_ctx *x, const char *prefix, const char *hdr)
{
	const struct streamfeatures *f = &x->f;
	struct buf out = {0};
	struct streamfeatures_offer o = {.starttls = f->starttls,
					 .mechs = (const char *const *)f->mechs,
					 .nmechs = f->nmechs,
					 .sasl2 = (const char *const *)f->sasl2_mechs,
					 .nsasl2 = f->nsasl2_mechs,
					 .fast = (const char *const *)f->fast_mechs,
					 .nfast = f->nfast_mechs,
					 .others = true};
	if (streamfeatures_write(&out, prefix, &o, f) != 0)
		abort();
	struct fuzz_ctx y = {0};
	if (fuzz_parse(&y, hdr, strlen(hdr), buf_head(&out), out.len) != XML_OK || y.features != 1)
		abort(); /* the client would get features it cannot parse */
	fuzz_check(&y.f);
	if (y.f.starttls != f->starttls || y.f.nmechs != f->nmechs || y.f.mechs_truncated ||
	    y.f.sasl2_truncated)
		abort(); /* the client gets each list whole, cut or not */
	for (size_t i = 0; i < f->nmechs; i++)
		if (strcmp(y.f.mechs[i], f->mechs[i]) != 0)
			abort();
	if (y.f.nsasl2_mechs != f->nsasl2_mechs)
		abort();
	for (size_t i = 0; i < f->nsasl2_mechs; i++)
		if (strcmp(y.f.sasl2_mechs[i], f->sasl2_mechs[i]) != 0)
			abort();
	/* FAST's list goes inside <authentication>, so only with it */
	size_t nfast = f->nsasl2_mechs > 0 && f->sasl2_inline ? f->nfast_mechs : 0;
	if (y.f.nfast_mechs != nfast || y.f.fast_truncated)
		abort();
	for (size_t i = 0; i < nfast; i++)
		if (strcmp(y.f.fast_mechs[i], f->fast_mechs[i]) != 0)
			abort();
	if (y.tls0rtt != 0 || y.fast_elems != (nfast > 0 ? 1 : 0))
		abort(); /* FAST reached the client other than rebuilt, inline */
	if (y.f.compression || y.f.channel_binding || y.f.iq_auth)
		abort(); /* something the proxy must strip reached the client */
	if (!fuzz_same_kept(f, &y.f))
		abort(); /* a kept feature changed on the way */
	streamfeatures_free(&y.f);
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char open[] = "<stream:features>";
	static const char close[] = "</stream:features>";
	struct buf in = {0};
	buf_add(&in, open, sizeof(open) - 1);
	buf_add(&in, data, size);
	buf_add(&in, close, sizeof(close) - 1);

	struct fuzz_ctx x = {0};
	enum xml_error err =
		fuzz_parse(&x, FUZZ_HDR, sizeof(FUZZ_HDR) - 1, buf_head(&in), in.len);
	buf_free(&in);
	/* An input that closes the features early and opens another one
	 * leaves the last; each was checked the same way. */
	if (x.features > 0) {
		fuzz_check(&x.f);
		fuzz_roundtrip(&x, "stream", FUZZ_HDR);
		fuzz_roundtrip(&x, "", FUZZ_HDR);
		fuzz_roundtrip(&x, "s",
			       "<s:stream xmlns='jabber:client' xmlns:s='" XML_NS_STREAMS "'>");
	}
	(void)err;
	streamfeatures_free(&x.f);
	return 0;
}
