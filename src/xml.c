#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "bounds.h"
#include "secmem.h"
#include "xml.h"
#include "xmltext.h"

/* Expat reports qualified names as "URI<sep>local<sep>prefix"; a space
 * cannot occur in a namespace URI or a name. */
#define XML_SEP ' '

/* Elements built per stanza; past it children are no longer built (the
 * login never needs deep trees; the size limit still applies). */
#define XML_MAX_BUILT 2048

/* The smallest block for an element's text: short texts (a resource, a
 * PLAIN payload) fit in one. */
#define XML_TEXT_MIN 64

/* The shortest run of plain character data (xmltext.h) that is counted and
 * passed over instead of being given to Expat: below it the extra Expat
 * call it takes (about 0.2 us) costs more than tokenizing the run. */
#define XML_SKIP_MIN 256
/* A run of plain bytes that begins inside a tag or a reference is given to
 * Expat up to a '>' or ';' among its first XML_TOKEN_SCAN bytes, at most
 * XML_TOKEN_TRIES times in a row (each is one more Expat call): enough for
 * "<body>" or "&amp;" before the text, and no cost to speak of when a
 * long attribute value is full of them. */
#define XML_TOKEN_SCAN 1024
#define XML_TOKEN_TRIES 4
/* Expat tokenizes a token it holds unfinished from its start again on
 * every call: while it holds more than this (a long start tag), a read is
 * not cut into pieces around plain runs (none can be passed over before
 * the token ends), or a tag cut every few hundred bytes costs Expat a
 * rescan of all of it each time, quadratic in the stanza. At this size a
 * piece costs at most a few times its own bytes. */
#define XML_HELD_SPLIT_MAX 1024
/* Expat 2.5 has no reparse deferral (2.6's is off here: it would hold a
 * lone <starttls/>): while it holds more than this of an unfinished token
 * in the stream's content, input with no '>' or ';' (no tag, comment, PI
 * or reference can end without one) is kept here until it is as long as
 * what Expat holds, so that a start tag sent a byte per record costs a
 * rescan per doubling, not per byte. Below it a rescan costs little. */
#define XML_DEFER_MIN 1024

/* Everything Expat allocates (its input buffer, the pools that hold names
 * and attribute values) is scrubbed when freed: it held the credentials
 * of every login the stream carried. */
static const XML_Memory_Handling_Suite xml_mem = {secmem_malloc, secmem_realloc, secmem_free};

struct xml_parser {
	XML_Parser expat;
	const struct xml_handler *h;
	void *ctx;
	size_t max_stanza;
	bool build;
	bool build_this; /* building the current depth-1 element */

	unsigned depth;        /* 0 outside the stream, 1 in it, 2+ in a stanza */
	uint64_t fed;          /* bytes of this stream fed to xml_feed */
	uint64_t skipped;      /* of those, plain text Expat never saw */
	uint64_t last_end;     /* where the last event Expat reported ended */
	uint64_t mark;         /* where the token being parsed began, at most */
	uint64_t stanza_start; /* offset of the current depth-1 element */
	struct xml_elem *root; /* the depth-1 element being built */
	struct xml_elem *cur;  /* the innermost element being built */
	unsigned cur_depth;    /* depth of cur */
	size_t built;          /* elements in root */

	char default_ns[64]; /* declared on the stream header; "" if none */

	/* Between stanzas after login (xml_release_idle) the Expat parser is
	 * freed (expat NULL) and made again when bytes come, primed with a
	 * stream header of its own: the real header's element name and every
	 * namespace it declared, which is all of the stream's state Expat
	 * keeps at depth 1. Expat's offsets and positions then count from the
	 * primer's first byte: expat_base is the stream offset of Expat's byte
	 * 0 (negative by the primer's length), line0/col0 where Expat's first
	 * line begins in the stream and prime_cols the primer's width. */
	bool priming;     /* the primer is being parsed: no callbacks */
	struct buf decls; /* the header's declarations, while it is parsed */
	char *prime;      /* the primer, once the header was parsed */
	size_t prime_len;
	int64_t expat_base;
	uint64_t line0, col0, prime_cols;
	/* Expat's hash salt, one per wrapper: every parser it makes (at a
	 * stream restart, after a release) uses it rather than a getrandom(2)
	 * each (0: Expat's own) */
	unsigned long salt;
	bool stopped; /* xml_stop() called in a callback */
	bool paused;  /* xml_pause(): Expat suspended, holding the rest */
	/* inside a CDATA section: its text ends events, but a parser made
	 * again (xml_release_idle) would be outside it, and the proxy's own
	 * element written there would be text to the peer */
	bool in_cdata;
	uint64_t stop_at; /* offset where the stop took effect */
	/* input kept from Expat (XML_DEFER_MIN), after the fed bytes: from
	 * secmem (it may be a login's), bounded by the stanza bound */
	char *defer;
	size_t defer_len, defer_cap;
	enum xml_error err;
	char errtext[128];
};

/* Elements and their text come from secmem: an <auth> element's text and
 * attributes are credentials, scrubbed when the tree is freed. */
static void xml_free_tree(struct xml_elem *e)
{
	while (e != NULL) {
		struct xml_elem *next = e->next;
		xml_free_tree(e->children);
		/* name strings live in the same block as the element */
		secmem_free(e->text);
		secmem_free(e);
		e = next;
	}
}

/* Stops Expat with a stream-ending error, from a callback. */
static void xml_fail(struct xml_parser *p, enum xml_error err, const char *text)
{
	if (p->err == XML_OK) {
		p->err = err;
		snprintf(p->errtext, sizeof(p->errtext), "%s", text);
	}
	XML_StopParser(p->expat, XML_FALSE);
}

/* Stream offsets of the event being reported: Expat counts only the bytes
 * it was given, from its own first byte (the primer's, after a release:
 * expat_base), and every byte passed over came before them. */
static uint64_t xml_event_start(const struct xml_parser *p)
{
	return (uint64_t)((int64_t)XML_GetCurrentByteIndex(p->expat) + p->expat_base) + p->skipped;
}

static uint64_t xml_event_end(const struct xml_parser *p)
{
	return xml_event_start(p) + (uint64_t)XML_GetCurrentByteCount(p->expat);
}

/* The stream's line and column of the current position (Expat's own
 * count restarts with each parser made after a release). */
static uint64_t xml_line(const struct xml_parser *p)
{
	return p->line0 + (uint64_t)XML_GetCurrentLineNumber(p->expat) - 1;
}

static uint64_t xml_column(const struct xml_parser *p)
{
	uint64_t col = (uint64_t)XML_GetCurrentColumnNumber(p->expat);
	if (XML_GetCurrentLineNumber(p->expat) != 1)
		return col;
	return p->col0 + (col >= p->prime_cols ? col - p->prime_cols : 0);
}

/* Splits Expat's "URI local prefix" (or "local") into the three parts,
 * copied into one allocation together with the element or attribute. */
static void xml_split(const char *qname, const char **ns, size_t *nslen, const char **local,
                      size_t *locallen, const char **prefix, size_t *prefixlen)
{
	const char *a = strchr(qname, XML_SEP);
	if (a == NULL) {
		*ns = "", *nslen = 0;
		*local = qname, *locallen = strlen(qname);
		*prefix = "", *prefixlen = 0;
		return;
	}
	*ns = qname, *nslen = (size_t)(a - qname);
	*local = a + 1;
	const char *b = strchr(*local, XML_SEP);
	if (b == NULL) {
		*locallen = strlen(*local);
		*prefix = "", *prefixlen = 0;
	} else {
		*locallen = (size_t)(b - *local);
		*prefix = b + 1, *prefixlen = strlen(b + 1);
	}
}

static char *xml_copy(char **dst, const char *s, size_t n)
{
	char *r = *dst;
	memcpy(r, s, n);
	r[n] = '\0';
	*dst += n + 1;
	return r;
}

/* Builds one element with its attributes in a single allocation. */
static struct xml_elem *xml_make(const char *qname, const char **atts, size_t nattrs)
{
	const char *ns, *local, *prefix;
	size_t nslen, locallen, prefixlen;
	size_t size = sizeof(struct xml_elem) + nattrs * sizeof(struct xml_attr);

	xml_split(qname, &ns, &nslen, &local, &locallen, &prefix, &prefixlen);
	size += nslen + locallen + prefixlen + 3;
	for (size_t i = 0; i < nattrs; i++)
		size += strlen(atts[2 * i]) + strlen(atts[2 * i + 1]) + 3;

	struct xml_elem *e = secmem_malloc(size);
	if (e == NULL)
		return NULL;
	memset(e, 0, size);
	e->attrs = (struct xml_attr *)(e + 1);
	e->nattrs = nattrs;
	char *s = (char *)(e->attrs + nattrs);
	e->ns = xml_copy(&s, ns, nslen);
	e->name = xml_copy(&s, local, locallen);
	e->prefix = xml_copy(&s, prefix, prefixlen);
	for (size_t i = 0; i < nattrs; i++) {
		const char *ans, *alocal, *aprefix;
		size_t anslen, alocallen, aprefixlen;
		xml_split(atts[2 * i], &ans, &anslen, &alocal, &alocallen, &aprefix, &aprefixlen);
		e->attrs[i].ns = xml_copy(&s, ans, anslen);
		e->attrs[i].name = xml_copy(&s, alocal, alocallen);
		e->attrs[i].value = xml_copy(&s, atts[2 * i + 1], strlen(atts[2 * i + 1]));
	}
	return e;
}

/* The primer of the stream whose header is being parsed: a start tag
 * with the header's qualified name (its end tag must match) and the
 * declarations xml_on_ns collected. Re-escaping can make it longer than
 * the header (a '"' in a URI becomes "&quot;"): one over MAX_STREAM_HEADER
 * is not kept, and that stream's parser is never released. Returns 0, or
 * -1 on out of memory. */
static int xml_make_prime(struct xml_parser *p, const char *prefix)
{
	struct buf b = {0};
	bool fits = p->decls.len <= MAX_STREAM_HEADER;
	int rc = fits ? buf_addf(&b, "<%s%sstream", prefix, prefix[0] ? ":" : "") : 0;
	if (fits) {
		rc |= buf_add(&b, buf_head(&p->decls), p->decls.len);
		rc |= buf_adds(&b, ">");
	}
	buf_free(&p->decls);
	free(p->prime);
	p->prime = NULL;
	p->prime_len = 0;
	if (rc == 0 && fits && b.len <= MAX_STREAM_HEADER && (p->prime = malloc(b.len)) != NULL) {
		memcpy(p->prime, buf_head(&b), b.len);
		p->prime_len = b.len;
	} else if (rc == 0 && fits && b.len <= MAX_STREAM_HEADER) {
		rc = -1;
	}
	buf_free(&b);
	return rc < 0 ? -1 : 0;
}

/* Fires for every start tag. */
static void XMLCALL xml_on_start(void *data, const XML_Char *qname, const XML_Char **atts)
{
	struct xml_parser *p = data;
	size_t nattrs = 0;

	/* Expat may still report events after XML_StopParser (the end of an
	 * empty element refused in its start handler): they are void */
	if (p->err != XML_OK || p->stopped || p->priming)
		return;
	p->last_end = xml_event_end(p);
	while (atts[2 * nattrs] != NULL) {
		if (strlen(atts[2 * nattrs + 1]) > MAX_XML_ATTR_LEN) {
			xml_fail(p, XML_E_POLICY, "attribute value too long");
			return;
		}
		nattrs++;
	}
	if (nattrs > MAX_XML_ATTRS) {
		xml_fail(p, XML_E_POLICY, "too many attributes");
		return;
	}
	if (++p->depth > MAX_XML_DEPTH) {
		xml_fail(p, XML_E_POLICY, "elements nested too deeply");
		return;
	}

	if (p->depth == 1) {
		if (xml_event_end(p) - xml_event_start(p) > MAX_STREAM_HEADER) {
			xml_fail(p, XML_E_POLICY, "stream header too large");
			return;
		}
		struct xml_elem *hdr = xml_make(qname, atts, nattrs);
		if (hdr == NULL) {
			xml_fail(p, XML_E_NOMEM, "out of memory");
			return;
		}
		if (strcmp(hdr->ns, XML_NS_STREAMS) != 0 || strcmp(hdr->name, "stream") != 0) {
			xml_fail(p, XML_E_INVALID_NAMESPACE,
			         "stream element not in the streams namespace");
		} else if (xml_make_prime(p, hdr->prefix) < 0) {
			xml_fail(p, XML_E_NOMEM, "out of memory");
		} else {
			p->mark = xml_event_end(p);
			p->h->open(p->ctx, hdr, p->mark);
		}
		xml_free_tree(hdr);
		return;
	}

	if (p->depth == 2) {
		p->stanza_start = xml_event_start(p);
		p->built = 0;
	} else if (xml_event_start(p) - p->stanza_start > p->max_stanza) {
		xml_fail(p, XML_E_POLICY, "stanza too large");
		return;
	}

	/* Without building, only the depth-1 element itself is made. */
	if (p->depth > 2 &&
	    !(p->build_this && p->cur_depth == p->depth - 1 && p->built < XML_MAX_BUILT))
		return;
	struct xml_elem *e = xml_make(qname, atts, nattrs);
	if (e == NULL) {
		xml_fail(p, XML_E_NOMEM, "out of memory");
		return;
	}
	p->built++;
	if (p->depth == 2 && strcmp(e->ns, XML_NS_STREAMS) == 0 && strcmp(e->name, "stream") == 0) {
		/* a stream opened inside the stream: refused at its start tag,
		 * before what it holds could reach a peer that reads it as a
		 * restart and its children as top-level elements */
		xml_free_tree(e);
		xml_fail(p, XML_E_POLICY, "a stream element inside the stream");
		return;
	}
	if (p->depth == 2) {
		/* stream-level elements (features, errors) are rare and small:
		 * always built, so errors are seen whole after login too */
		p->build_this = p->build || strcmp(e->ns, XML_NS_STREAMS) == 0;
		p->root = e;
	} else {
		struct xml_elem **tail = &p->cur->children;
		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = e;
		e->parent = p->cur;
	}
	p->cur = e;
	p->cur_depth = p->depth;
}

/* Fires for every end tag (and right after the start of an empty one). */
static void XMLCALL xml_on_end(void *data, const XML_Char *qname)
{
	struct xml_parser *p = data;
	(void)qname;

	if (p->err != XML_OK || p->stopped)
		return;
	p->last_end = xml_event_end(p);
	if (p->depth == 1) {
		p->depth = 0;
		p->mark = xml_event_end(p);
		p->h->close(p->ctx);
		return;
	}
	if (p->depth == 2) {
		struct xml_elem *root = p->root;
		uint64_t end = xml_event_end(p);
		p->root = p->cur = NULL;
		p->cur_depth = 0;
		p->depth = 1;
		p->mark = end;
		if (end - p->stanza_start > p->max_stanza)
			xml_fail(p, XML_E_POLICY, "stanza too large");
		else if (root != NULL)
			p->h->element(p->ctx, root, p->stanza_start, end);
		xml_free_tree(root);
		return;
	}
	if (p->cur_depth == p->depth) {
		p->cur = p->cur->parent;
		p->cur_depth--;
	}
	p->depth--;
}

/* The block holding n bytes of text and its NUL. Sizes double so text
 * arriving in many pieces (Expat reports each entity reference as one)
 * costs linear time, although every growth copies: secmem_realloc never
 * extends in place. */
static size_t xml_text_cap(size_t n)
{
	size_t cap = XML_TEXT_MIN;
	while (cap < n + 1)
		cap *= 2;
	return cap;
}

/* Appends len bytes to e's text. Returns 0, or -1 on out of memory (e
 * unchanged). */
static int xml_text_add(struct xml_elem *e, const char *s, size_t len)
{
	size_t cap = e->text != NULL ? xml_text_cap(e->textlen) : 0;
	if (e->textlen + len + 1 > cap) {
		char *t = secmem_realloc(e->text, xml_text_cap(e->textlen + len));
		if (t == NULL)
			return -1;
		e->text = t;
	}
	memcpy(e->text + e->textlen, s, len);
	e->textlen += len;
	e->text[e->textlen] = '\0';
	return 0;
}

/* Character data: kept for built elements, checked against the stanza
 * limit; between stanzas (whitespace keepalives) only moves the mark. */
static void XMLCALL xml_on_text(void *data, const XML_Char *s, int len)
{
	struct xml_parser *p = data;

	if (p->err != XML_OK || p->stopped)
		return;
	p->last_end = xml_event_end(p);
	if (p->depth < 2) {
		p->mark = xml_event_end(p);
		return;
	}
	if (xml_event_end(p) - p->stanza_start > p->max_stanza) {
		xml_fail(p, XML_E_POLICY, "stanza too large");
		return;
	}
	/* the depth-1 element itself is made without building too, but
	 * nothing reads its text then */
	if (p->cur == NULL || p->cur_depth != p->depth || !p->build_this)
		return;
	if (xml_text_add(p->cur, s, (size_t)len) < 0)
		xml_fail(p, XML_E_NOMEM, "out of memory");
}

/* Fires for each namespace declaration; the one without a prefix on the
 * stream header is the content namespace (RFC 6120 4.8.2). Those of the
 * header are kept for the primer (xml_make_prime): stanzas may use any
 * prefix it declared. */
static void XMLCALL xml_on_ns(void *data, const XML_Char *prefix, const XML_Char *uri)
{
	struct xml_parser *p = data;
	if (p->depth != 0 || p->priming)
		return;
	if (prefix == NULL)
		snprintf(p->default_ns, sizeof(p->default_ns), "%s", uri ? uri : "");
	if (p->decls.len > MAX_STREAM_HEADER)
		return; /* no primer for this stream (xml_make_prime) */
	int rc = prefix != NULL ? buf_addf(&p->decls, " xmlns:%s='", prefix)
	                        : buf_adds(&p->decls, " xmlns='");
	if (rc == 0 && uri != NULL)
		rc = xml_escape(&p->decls, uri, strlen(uri));
	if (rc == 0)
		rc = buf_adds(&p->decls, "'");
	if (rc < 0)
		xml_fail(p, XML_E_NOMEM, "out of memory");
}

static void XMLCALL xml_on_cdata_start(void *data)
{
	((struct xml_parser *)data)->in_cdata = true;
}

static void XMLCALL xml_on_cdata_end(void *data)
{
	((struct xml_parser *)data)->in_cdata = false;
}

/* RFC 6120 11.1: no DTD, entity declaration, comment or processing
 * instruction anywhere in a stream. */
static void XMLCALL xml_on_doctype(void *data, const XML_Char *name, const XML_Char *sysid,
                                   const XML_Char *pubid, int has_internal_subset)
{
	(void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
	xml_fail(data, XML_E_RESTRICTED, "document type declaration");
}

static void XMLCALL xml_on_entity(void *data, const XML_Char *name, int is_param,
                                  const XML_Char *value, int value_len, const XML_Char *base,
                                  const XML_Char *sysid, const XML_Char *pubid,
                                  const XML_Char *notation)
{
	(void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid;
	(void)pubid, (void)notation;
	xml_fail(data, XML_E_RESTRICTED, "entity declaration");
}

static void XMLCALL xml_on_comment(void *data, const XML_Char *text)
{
	(void)text;
	xml_fail(data, XML_E_RESTRICTED, "comment");
}

static void XMLCALL xml_on_pi(void *data, const XML_Char *target, const XML_Char *pidata)
{
	(void)target, (void)pidata;
	xml_fail(data, XML_E_RESTRICTED, "processing instruction");
}

/* A fresh Expat parser with our handlers, for p. Returns 0 or -1. */
static int xml_expat_make(struct xml_parser *p)
{
	static const XML_Char sep[] = {XML_SEP, '\0'};
	/* UTF-8 is forced: RFC 6120 11.6 allows no other encoding. What
	 * XML_ParserCreateNS does, with our allocator. */
	p->expat = XML_ParserCreate_MM("UTF-8", &xml_mem, sep);
	if (p->expat == NULL)
		return -1;
	if (p->salt != 0)
		XML_SetHashSalt(p->expat, p->salt);
	XML_SetReturnNSTriplet(p->expat, XML_TRUE);
	XML_SetUserData(p->expat, p);
	XML_SetElementHandler(p->expat, xml_on_start, xml_on_end);
	XML_SetCharacterDataHandler(p->expat, xml_on_text);
	XML_SetCdataSectionHandler(p->expat, xml_on_cdata_start, xml_on_cdata_end);
	XML_SetStartNamespaceDeclHandler(p->expat, xml_on_ns);
	XML_SetStartDoctypeDeclHandler(p->expat, xml_on_doctype);
	XML_SetEntityDeclHandler(p->expat, xml_on_entity);
	XML_SetCommentHandler(p->expat, xml_on_comment);
	XML_SetProcessingInstructionHandler(p->expat, xml_on_pi);
	XML_SetParamEntityParsing(p->expat, XML_PARAM_ENTITY_PARSING_NEVER);
#if defined(XI_HAVE_REPARSE_DEFERRAL) || XML_MAJOR_VERSION > 2 ||                                  \
    (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
	/* A lone <starttls/> must reach us at once, or the login deadlocks. */
	XML_SetReparseDeferralEnabled(p->expat, XML_FALSE);
#endif
	return 0;
}

/* A new stream: a fresh Expat parser, offsets and positions from 0. */
static int xml_expat_new(struct xml_parser *p)
{
	if (xml_expat_make(p) < 0)
		return -1;
	buf_free(&p->decls);
	free(p->prime);
	p->prime = NULL;
	p->prime_len = 0;
	p->expat_base = 0;
	p->line0 = 1;
	p->col0 = 0;
	p->prime_cols = 0;
	p->depth = 0;
	p->default_ns[0] = '\0';
	secmem_free(p->defer);
	p->defer = NULL;
	p->defer_len = p->defer_cap = 0;
	p->fed = 0;
	p->skipped = 0;
	p->last_end = 0;
	p->mark = 0;
	p->stanza_start = 0;
	p->cur_depth = 0;
	p->stopped = false;
	p->paused = false;
	p->in_cdata = false;
	return 0;
}

struct xml_parser *xml_new(const struct xml_handler *h, void *ctx, size_t max_stanza)
{
	struct xml_parser *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->h = h;
	p->ctx = ctx;
	p->max_stanza = max_stanza;
	p->build = true;
	if (getrandom(&p->salt, sizeof(p->salt), 0) != (ssize_t)sizeof(p->salt))
		p->salt = 0;
	if (xml_expat_new(p) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

void xml_free(struct xml_parser *p)
{
	if (p == NULL)
		return;
	xml_free_tree(p->root);
	if (p->expat != NULL)
		XML_ParserFree(p->expat);
	buf_free(&p->decls);
	free(p->prime);
	secmem_free(p->defer);
	free(p);
}

int xml_reset(struct xml_parser *p)
{
	xml_free_tree(p->root);
	p->root = p->cur = NULL;
	if (p->expat != NULL)
		XML_ParserFree(p->expat);
	p->expat = NULL;
	if (xml_expat_new(p) < 0) {
		p->err = XML_E_NOMEM;
		return -1;
	}
	return 0;
}

void xml_stop(struct xml_parser *p)
{
	if (p->stopped)
		return;
	p->stopped = true;
	if (p->expat == NULL) {
		p->stop_at = p->fed; /* released: nothing is being parsed */
		return;
	}
	p->stop_at = xml_event_end(p);
	XML_StopParser(p->expat, XML_FALSE);
}

bool xml_idle(const struct xml_parser *p)
{
	if (p->expat == NULL)
		return true;
	XML_ParsingStatus st;
	XML_GetParsingStatus(p->expat, &st);
	/* depth 1 and every byte fed ended an event (mark): no tag, no
	 * character, not even a CR that may begin a CRLF, waits in Expat's
	 * buffer; Expat's own position agrees, and it is neither suspended
	 * nor stopped */
	return p->err == XML_OK && !p->stopped && !p->paused && p->depth == 1 && !p->in_cdata &&
	       p->defer_len == 0 && p->mark == p->fed && p->root == NULL && p->prime != NULL &&
	       st.parsing == XML_PARSING && xml_event_start(p) == p->fed;
}

bool xml_release_idle(struct xml_parser *p)
{
	if (p->expat == NULL || !xml_idle(p))
		return false;
	/* where the stream is, for the parser xml_revive() makes */
	p->line0 = xml_line(p);
	p->col0 = xml_column(p);
	XML_ParserFree(p->expat);
	p->expat = NULL;
	return true;
}

/* The Expat parser again, primed to where the released one was: inside
 * the stream element, with the header's namespaces in scope. Returns 0 or
 * -1 (out of memory, or the primer refused: never, it parsed before). */
static int xml_revive(struct xml_parser *p)
{
	if (xml_expat_make(p) < 0)
		return -1;
	p->priming = true;
	enum XML_Status st = XML_Parse(p->expat, p->prime, (int)p->prime_len, XML_FALSE);
	p->priming = false;
	if (st != XML_STATUS_OK) {
		XML_ParserFree(p->expat);
		p->expat = NULL;
		return -1;
	}
	p->expat_base = (int64_t)p->fed - (int64_t)p->prime_len - (int64_t)p->skipped;
	p->prime_cols = (uint64_t)XML_GetCurrentColumnNumber(p->expat);
	return 0;
}

bool xml_released(const struct xml_parser *p)
{
	return p->expat == NULL;
}

/* True if the input where Expat stopped begins a markup declaration
 * (<!DOCTYPE, <!ENTITY, <!ELEMENT, <!ATTLIST, <!NOTATION): inside the
 * stream Expat calls these invalid tokens, but they are restricted XML. */
static bool xml_at_declaration(const struct xml_parser *p)
{
	int offset = 0, size = 0;
	const char *ctx = XML_GetInputContext(p->expat, &offset, &size);
	/* Expat points just past the "<!" it could not continue */
	if (ctx == NULL || offset < 2 || offset >= size)
		return false;
	const char *at = ctx + offset;
	return at[-2] == '<' && at[-1] == '!' && at[0] >= 'A' && at[0] <= 'Z';
}

static enum xml_error xml_map_expat(struct xml_parser *p)
{
	enum XML_Error code = XML_GetErrorCode(p->expat);
	if (code == XML_ERROR_INVALID_TOKEN && xml_at_declaration(p)) {
		snprintf(p->errtext, sizeof(p->errtext), "markup declaration in the stream");
		return XML_E_RESTRICTED;
	}
	snprintf(p->errtext, sizeof(p->errtext), "%s at line %llu column %llu",
	         XML_ErrorString(code), (unsigned long long)xml_line(p),
	         (unsigned long long)xml_column(p));
	switch (code) {
	case XML_ERROR_NO_MEMORY:
		return XML_E_NOMEM;
	case XML_ERROR_UNBOUND_PREFIX:
		return XML_E_BAD_PREFIX;
	case XML_ERROR_MISPLACED_XML_PI:
		return XML_E_RESTRICTED;
	default:
		return XML_E_NOT_WELL_FORMED;
	}
}

/*
 * Whether the next bytes may be passed over when plain (xmltext.h): only
 * after login (building off), inside a stanza that is not being built,
 * and with every byte fed so far reported by Expat in an event, so that
 * it is between two tokens of content (or inside a CDATA section, where
 * plain bytes are as harmless), never inside a tag, a reference, or
 * markup it has not finished. What is passed over is text Expat would
 * have accepted and reported in pieces that nothing reads; the stanza
 * limit is checked on it here.
 */
static bool xml_can_skip(const struct xml_parser *p)
{
	return !p->build && !p->build_this && p->depth >= 2 && p->last_end == p->fed &&
	       p->defer_len == 0 && p->err == XML_OK && !p->stopped && !p->paused;
}

/* Gives Expat n more bytes of the feed that began at stream offset base.
 * *more is true when the feed may go on; otherwise the result (and
 * *used) is xml_feed's. */
static enum xml_error xml_parse(struct xml_parser *p, const char *data, size_t n, uint64_t base,
                                size_t *used, bool *more)
{
	*more = false;
	p->fed += n;
	/* Into Expat's own buffer (what XML_Parse does when Expat keeps
	 * context bytes), so that a pause (xml_pause) can leave the rest of
	 * data there for xml_resume() after data is gone. */
	void *buf = n > 0 ? XML_GetBuffer(p->expat, (int)n) : NULL;
	if (n > 0 && buf == NULL) {
		p->err = XML_E_NOMEM;
		snprintf(p->errtext, sizeof(p->errtext), "out of memory");
		return p->err;
	}
	if (n > 0)
		memcpy(buf, data, n);
	enum XML_Status st = XML_ParseBuffer(p->expat, (int)n, XML_FALSE);
	if (st == XML_STATUS_SUSPENDED) {
		*used = (size_t)(p->fed - base); /* all of it is Expat's now */
		return XML_OK;
	}
	if (st == XML_STATUS_ERROR) {
		if (p->err != XML_OK)
			return p->err;
		if (p->stopped) {
			*used = (size_t)(p->stop_at - base);
			p->fed = p->stop_at;
			return XML_OK;
		}
		p->err = xml_map_expat(p);
		return p->err;
	}
	*more = true;
	return XML_OK;
}

/* A token Expat is still buffering (a huge start tag or attribute), with
 * the input kept from it, has produced no callback yet: bound it here. */
static enum xml_error xml_check_pending(struct xml_parser *p)
{
	uint64_t pending = p->fed + p->defer_len - (p->depth >= 2 ? p->stanza_start : p->mark);
	size_t bound = p->depth == 0 ? MAX_STREAM_HEADER : p->max_stanza;
	if (pending > bound) {
		p->err = XML_E_POLICY;
		snprintf(p->errtext, sizeof(p->errtext), "%s too large",
		         p->depth == 0 ? "stream header" : "stanza");
	}
	return p->err;
}

/*
 * Our reparse deferral (XML_DEFER_MIN): keeps the len bytes of data from
 * Expat when it holds a long unfinished token in content that they cannot
 * end, or gives Expat what was kept before data goes to it. Kept bytes
 * cannot end a token, so they make no event (no stop, pause or offset can
 * fall among them); an error in them (a bad character in the tag) is
 * found when they are given. Returns 1 if data was kept, 0 if it is to be
 * parsed now, -1 on error (p->err).
 */
static int xml_defer(struct xml_parser *p, const char *data, size_t len)
{
	uint64_t held = p->fed - p->last_end;
	/* not past the bound either: the bytes go to Expat first, so that an
	 * error in them is the one reported, as without the deferral */
	uint64_t pending =
	    p->fed + p->defer_len + len - (p->depth >= 2 ? p->stanza_start : p->mark);
	if (p->depth >= 1 && held > XML_DEFER_MIN && p->defer_len + len < held &&
	    pending <= p->max_stanza && memchr(data, '>', len) == NULL &&
	    memchr(data, ';', len) == NULL) {
		if (p->defer_len + len > p->defer_cap) {
			size_t cap = p->defer_cap ? p->defer_cap : XML_DEFER_MIN;
			while (cap < p->defer_len + len)
				cap *= 2;
			char *nb = secmem_realloc(p->defer, cap);
			if (nb == NULL) {
				p->err = XML_E_NOMEM;
				snprintf(p->errtext, sizeof(p->errtext), "out of memory");
				return -1;
			}
			p->defer = nb;
			p->defer_cap = cap;
		}
		memcpy(p->defer + p->defer_len, data, len);
		p->defer_len += len;
		return 1;
	}
	if (p->defer_len == 0)
		return 0;
	size_t n = p->defer_len, used;
	bool more;
	p->defer_len = 0; /* counted in fed from here */
	enum xml_error err = xml_parse(p, p->defer, n, p->fed, &used, &more);
	/* freed (scrubbed) at once: an idle session holds none of it */
	secmem_free(p->defer);
	p->defer = NULL;
	p->defer_cap = 0;
	if (!more && err == XML_OK) {
		/* no event, so no stop or pause, can come from these bytes */
		p->err = XML_E_POLICY;
		snprintf(p->errtext, sizeof(p->errtext), "parser stopped in kept input");
	}
	return more ? 0 : -1;
}

enum xml_error xml_feed(struct xml_parser *p, const char *data, size_t len, size_t *used)
{
	*used = 0;
	if (p->err != XML_OK)
		return p->err;
	if (p->stopped)
		return XML_OK;
	/* Expat takes a leading byte-order mark or NUL as UTF-16 whatever
	 * encoding it was told: a stream in UTF-16 would be parsed here and
	 * relayed raw to a peer that reads it as UTF-8. */
	if (p->fed == 0 && len > 0 &&
	    (data[0] == '\0' || (unsigned char)data[0] == 0xFE || (unsigned char)data[0] == 0xFF)) {
		p->err = XML_E_ENCODING;
		snprintf(p->errtext, sizeof(p->errtext), "the stream is not UTF-8");
		return p->err;
	}
	if (p->paused) {
		/* a caller bug: the bytes would go ahead of those the pause holds */
		p->err = XML_E_POLICY;
		snprintf(p->errtext, sizeof(p->errtext), "input while the parser is paused");
		return p->err;
	}
	if (p->expat == NULL && len > 0 && xml_revive(p) < 0) {
		p->err = XML_E_NOMEM;
		snprintf(p->errtext, sizeof(p->errtext), "out of memory");
		return p->err;
	}
	if (len == 0 && p->expat == NULL)
		return XML_OK;
	if (len > 0) {
		int d = xml_defer(p, data, len);
		if (d < 0)
			return p->err;
		if (d > 0) {
			*used = len;
			return xml_check_pending(p);
		}
	}
	uint64_t base = p->fed;
	size_t done = 0;
	unsigned tries = 0;
	while (done < len) {
		size_t n = len - done;
		if (xml_can_skip(p)) {
			size_t run = xmltext_plain_run(data + done, n);
			if (run > 0) {
				p->fed += run;
				p->skipped += run;
				done += run;
				/* Expat is still between two tokens of content */
				p->last_end = p->fed;
				tries = 0;
				if (p->fed - p->stanza_start > p->max_stanza) {
					p->err = XML_E_POLICY;
					snprintf(p->errtext, sizeof(p->errtext),
					         "stanza too large");
					return p->err;
				}
				continue;
			}
		}
		if (!p->build && p->fed - p->last_end <= XML_HELD_SPLIT_MAX) {
			/* Expat gets the bytes up to the next long run of plain
			 * text, which it may then be spared. A run it could not be
			 * spared began inside a token ("<" then "body>text", "&"
			 * then "amp;text"): Expat takes it up to the '>' or ';'
			 * that may end that token, and the rest is tried again; a
			 * run with none early on (a long attribute value) goes to
			 * it whole. */
			size_t lim = n < XML_TOKEN_SCAN ? n : XML_TOKEN_SCAN;
			size_t from = xmltext_plain_run(data + done, lim);
			size_t tok = from > 0 && tries < XML_TOKEN_TRIES
			                 ? xmltext_token_end(data + done, from)
			                 : 0;
			if (tok > 0) {
				n = tok;
				tries++;
			} else {
				if (from == lim)
					from = xmltext_plain_run(data + done, n);
				n = from +
				    xmltext_next_run(data + done + from, n - from, XML_SKIP_MIN);
				tries = 0;
			}
		}
		bool more;
		enum xml_error err = xml_parse(p, data + done, n, base, used, &more);
		if (!more)
			return err;
		done += n;
	}
	*used = len;
	return xml_check_pending(p);
}

void xml_pause(struct xml_parser *p)
{
	if (p->stopped || p->paused)
		return;
	p->paused = true;
	XML_StopParser(p->expat, XML_TRUE);
}

bool xml_paused(const struct xml_parser *p)
{
	return p->paused;
}

enum xml_error xml_resume(struct xml_parser *p)
{
	if (p->err != XML_OK || !p->paused)
		return p->err;
	p->paused = false;
	enum XML_Status st = XML_ResumeParser(p->expat);
	if (st == XML_STATUS_ERROR && p->err == XML_OK && !p->stopped)
		p->err = xml_map_expat(p);
	return p->err;
}

void xml_set_build(struct xml_parser *p, bool build)
{
	p->build = build;
}

void xml_set_max_stanza(struct xml_parser *p, size_t max_stanza)
{
	p->max_stanza = max_stanza;
}

uint64_t xml_offset(const struct xml_parser *p)
{
	return p->fed + p->defer_len;
}

unsigned xml_depth(const struct xml_parser *p)
{
	return p->depth;
}

bool xml_at_boundary(const struct xml_parser *p)
{
	return p->depth == 1 && p->defer_len == 0 && p->mark == p->fed && !p->in_cdata;
}

const char *xml_default_ns(const struct xml_parser *p)
{
	return p->default_ns;
}

const char *xml_error_text(const struct xml_parser *p)
{
	return p->errtext[0] ? p->errtext : "no error";
}

const char *xml_attr(const struct xml_elem *e, const char *ns, const char *name)
{
	for (size_t i = 0; i < e->nattrs; i++)
		if (strcmp(e->attrs[i].name, name) == 0 &&
		    strcmp(e->attrs[i].ns, ns ? ns : "") == 0)
			return e->attrs[i].value;
	return NULL;
}

bool xml_is(const struct xml_elem *e, const char *ns, const char *name)
{
	return strcmp(e->name, name) == 0 && (ns == NULL || strcmp(e->ns, ns) == 0);
}

const struct xml_elem *xml_child(const struct xml_elem *e, const char *ns, const char *name)
{
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next)
		if (xml_is(c, ns, name))
			return c;
	return NULL;
}

int xml_escape(struct buf *out, const char *s, size_t len)
{
	size_t i = 0, run = 0;
	int rc = 0;
	for (; i < len && rc == 0; i++) {
		const char *rep;
		switch (s[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		case '"':
			rep = "&quot;";
			break;
		/* kept as characters: raw, an attribute value would normalise
		 * them to spaces, and CR to LF in text */
		case '\t':
			rep = "&#9;";
			break;
		case '\n':
			rep = "&#10;";
			break;
		case '\r':
			rep = "&#13;";
			break;
		default:
			continue;
		}
		rc = buf_add(out, s + run, i - run);
		if (rc == 0)
			rc = buf_adds(out, rep);
		run = i + 1;
	}
	if (rc == 0)
		rc = buf_add(out, s + run, len - run);
	return rc;
}

int xml_write(struct buf *out, const struct xml_elem *e, const char *parent_ns)
{
	/* the xml: namespace is bound by definition and may not be declared */
	const char *pfx = strcmp(e->ns, XML_NS_XML) == 0 ? "xml:" : "";
	int rc = buf_addf(out, "<%s%s", pfx, e->name);
	if (pfx[0] == '\0' && strcmp(e->ns, parent_ns) != 0) {
		rc |= buf_adds(out, " xmlns='");
		rc |= xml_escape(out, e->ns, strlen(e->ns));
		rc |= buf_adds(out, "'");
	}
	unsigned nprefix = 0;
	for (size_t i = 0; i < e->nattrs; i++) {
		const struct xml_attr *a = &e->attrs[i];
		if (a->ns[0] == '\0') {
			rc |= buf_addf(out, " %s='", a->name);
		} else if (strcmp(a->ns, XML_NS_XML) == 0) {
			rc |= buf_addf(out, " xml:%s='", a->name);
		} else {
			rc |= buf_addf(out, " xmlns:a%u='", nprefix);
			rc |= xml_escape(out, a->ns, strlen(a->ns));
			rc |= buf_addf(out, "' a%u:%s='", nprefix++, a->name);
		}
		rc |= xml_escape(out, a->value, strlen(a->value));
		rc |= buf_adds(out, "'");
	}
	if (e->children == NULL && e->textlen == 0)
		return rc | buf_adds(out, "/>");
	rc |= buf_adds(out, ">");
	if (e->textlen)
		rc |= xml_escape(out, e->text, e->textlen);
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next)
		rc |= xml_write(out, c, pfx[0] ? parent_ns : e->ns);
	rc |= buf_addf(out, "</%s%s>", pfx, e->name);
	return rc ? -1 : 0;
}
