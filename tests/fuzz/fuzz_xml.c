/*
 * libFuzzer target for the XML stream layer (xml.c), driven as the proxy
 * drives it.
 *
 * Input: byte 0 is a set of flags:
 *   bit 0     building off from the start (the proxy after login);
 *   bits 1-2  max_stanza: 64 KiB, 256 KiB, 1 KiB, 100 bytes;
 *   bit 3     after <success>: building off and max_stanza 256 KiB, as the
 *             proxy switches once the login is done;
 *   bit 4     the input is parsed twice, once with xml_release_idle()
 *             after every feed (as the idle sweep does after login), and
 *             both runs must report the same events, offsets and error.
 * Bytes 1-4 are read sizes, used in turn (0: everything left), so the
 * same stream is cut at every place a socket could cut it. The rest is
 * the stream.
 *
 * Handlers behave like login.c: <starttls>, <proceed> and <success> (any
 * namespace) call xml_stop(), and the loop calls xml_reset() and feeds the
 * unused bytes to the new stream. Every element is serialised with
 * xml_write() and the result parsed again in a stream of its own: it must
 * parse, and give the same tree.
 * Contract checks abort() so libFuzzer keeps the input: offsets within
 * what was fed, *used <= len and == len unless stopped, sticky errors with
 * a text, depth bounded.
 *
 * Build and run: tests/fuzz/run SECONDS xml
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "buf.h"
#include "xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_WRAP                                                                                  \
	"<stream:stream xmlns='jabber:client' xmlns:stream='" XML_NS_STREAMS "' version='1.0'>"

struct fuzz_ctx {
	struct xml_parser *p;
	bool stopped;
	bool login_switch; /* flag bit 3 */
	uint64_t fed_before; /* bytes fed to this stream before the current xml_feed */
	uint64_t feeding;    /* bytes in the current xml_feed */
	struct buf out;
	struct buf trace; /* what the handlers saw, for bit 4 */
};

/* The checker's own parse of a written element. */
struct fuzz_reparse {
	int elements;
	struct buf dump;
};

static void fuzz_dump(struct buf *b, const struct xml_elem *e)
{
	buf_addf(b, "<{%s}%s", e->ns, e->name);
	for (size_t i = 0; i < e->nattrs; i++) {
		buf_addf(b, " {%s}%s=", e->attrs[i].ns, e->attrs[i].name);
		buf_adds(b, e->attrs[i].value);
	}
	buf_adds(b, ">");
	if (e->textlen)
		buf_add(b, e->text, e->textlen);
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next)
		fuzz_dump(b, c);
	buf_adds(b, "</>");
}

static void fuzz_re_open(void *ctx, const struct xml_elem *h, uint64_t end)
{
	(void)ctx, (void)h, (void)end;
}

static void fuzz_re_element(void *ctx, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	struct fuzz_reparse *r = ctx;
	(void)start, (void)end;
	r->elements++;
	fuzz_dump(&r->dump, e);
}

static void fuzz_re_close(void *ctx)
{
	(void)ctx;
}

static const struct xml_handler fuzz_re_handler = {fuzz_re_open, fuzz_re_element,
						   fuzz_re_close};

/* Parses what xml_write made of e and compares. */
static void fuzz_check_written(const struct xml_elem *e, const struct buf *w)
{
	struct fuzz_reparse r = {0};
	struct xml_parser *q = xml_new(&fuzz_re_handler, &r, 64u << 20);
	if (q == NULL)
		abort();
	size_t used;
	enum xml_error err = xml_feed(q, FUZZ_WRAP, sizeof(FUZZ_WRAP) - 1, &used);
	if (err == XML_OK)
		err = xml_feed(q, buf_head(w), w->len, &used);
	if (err != XML_OK || r.elements != 1)
		abort(); /* xml_write made something that does not parse as one element */
	struct buf d = {0};
	fuzz_dump(&d, e);
	if (d.len != r.dump.len || memcmp(buf_head(&d), buf_head(&r.dump), d.len) != 0)
		abort(); /* the round trip changed the tree */
	buf_free(&d);
	buf_free(&r.dump);
	xml_free(q);
}

/* Fires for the stream header. */
static void fuzz_open(void *ctx, const struct xml_elem *h, uint64_t end)
{
	struct fuzz_ctx *f = ctx;
	if (!xml_is(h, XML_NS_STREAMS, "stream"))
		abort();
	if (end == 0 || end > f->fed_before + f->feeding)
		abort();
	(void)xml_attr(h, XML_NS_XML, "lang");
	(void)xml_attr(h, NULL, "to");
	buf_addf(&f->trace, "open %llu\n", (unsigned long long)end);
}

/* Fires for each depth-1 element. */
static void fuzz_element(void *ctx, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	struct fuzz_ctx *f = ctx;
	if (start >= end || end > f->fed_before + f->feeding)
		abort();
	if (xml_depth(f->p) != 1)
		abort();
	buf_reset(&f->out);
	if (xml_write(&f->out, e, XML_NS_CLIENT) != 0)
		abort();
	fuzz_check_written(e, &f->out);
	buf_addf(&f->trace, "elem [%llu,%llu) ", (unsigned long long)start,
		 (unsigned long long)end);
	fuzz_dump(&f->trace, e);
	buf_adds(&f->trace, "\n");
	(void)xml_child(e, NULL, "required");
	if (strcmp(e->name, "starttls") == 0 || strcmp(e->name, "proceed") == 0 ||
	    strcmp(e->name, "success") == 0) {
		xml_stop(f->p);
		f->stopped = true;
		if (f->login_switch && strcmp(e->name, "success") == 0) {
			xml_set_build(f->p, false);
			xml_set_max_stanza(f->p, DEFAULT_MAX_STANZA);
		}
	}
}

static void fuzz_close(void *ctx)
{
	struct fuzz_ctx *f = ctx;
	buf_adds(&f->trace, "close\n");
}

static const struct xml_handler fuzz_handler = {fuzz_open, fuzz_element, fuzz_close};

/* One run over the input; release: xml_release_idle() after each feed.
 * The events go to *trace (the caller frees it). */
static void fuzz_run(const uint8_t *data, size_t size, bool release, struct buf *trace)
{
	static const size_t max_stanza[4] = {DEFAULT_MAX_STANZA_PRELOGIN, DEFAULT_MAX_STANZA, 1024,
					     100};
	uint8_t flags = data[0];
	size_t sizes[4] = {data[1], data[2], data[3], data[4]};
	const char *s = (const char *)data + 5;
	size_t n = size - 5;

	struct fuzz_ctx f = {0};
	f.login_switch = flags & 8;
	f.p = xml_new(&fuzz_handler, &f, max_stanza[(flags >> 1) & 3]);
	if (f.p == NULL)
		abort();
	if (flags & 1)
		xml_set_build(f.p, false);

	size_t off = 0;
	unsigned turn = 0;
	while (off < n) {
		size_t c = sizes[turn++ % 4];
		if (c == 0 || c > n - off)
			c = n - off;
		size_t used = (size_t)-1;
		f.fed_before = xml_offset(f.p);
		f.feeding = c;
		enum xml_error err = xml_feed(f.p, s + off, c, &used);
		if (used > c)
			abort();
		if (err != XML_OK) {
			if (strcmp(xml_error_text(f.p), "no error") == 0)
				abort(); /* an error must say why */
			buf_addf(&f.trace, "error %d %s\n", (int)err, xml_error_text(f.p));
			size_t again = 1;
			if (xml_feed(f.p, "<a/>", 4, &again) != err || again != 0)
				abort(); /* errors are sticky */
			break;
		}
		if (xml_depth(f.p) > MAX_XML_DEPTH + 1)
			abort();
		if (f.stopped) {
			if (xml_offset(f.p) != f.fed_before + used)
				abort(); /* the offset is where the stop took effect */
			if (xml_reset(f.p) != 0)
				abort();
			f.stopped = false;
		} else if (used != c) {
			abort(); /* bytes left unused without a stop */
		}
		off += used;
		if (release && xml_release_idle(f.p) && !xml_at_boundary(f.p))
			abort(); /* released a stream that was not between stanzas */
	}
	xml_free(f.p);
	buf_free(&f.out);
	*trace = f.trace;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5)
		return 0;
	struct buf a = {0}, b = {0};
	fuzz_run(data, size, false, &a);
	if (data[0] & 16) {
		fuzz_run(data, size, true, &b);
		if (a.len != b.len || memcmp(buf_head(&a), buf_head(&b), a.len) != 0)
			abort(); /* releasing the parser changed what was reported */
	}
	buf_free(&a);
	buf_free(&b);
	return 0;
}
