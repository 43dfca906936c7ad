/*
 * The XML stream layer: Expat behind a small interface, for one direction
 * of one stream. Namespaces are resolved (never match the literal prefix
 * "stream:"); restricted XML (RFC 6120 11.1) is enforced; depth, attribute
 * count and length, stanza size and header size are capped.
 *
 * Depth 0 is the stream header, reported by open(); depth 1 elements
 * (stanzas, features, SASL elements) are built as a tree while building is
 * on and reported whole by element(); the end of the stream by close().
 * A stream restart is requested from inside a callback with xml_stop() and
 * carried out with xml_reset() after xml_feed() has returned, because
 * Expat cannot be reset from inside its own callback.
 */
#ifndef XI_XML_H
#define XI_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define XML_NS_STREAMS "http://etherx.jabber.org/streams"
#define XML_NS_CLIENT "jabber:client"
#define XML_NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define XML_NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define XML_NS_SASL2 "urn:xmpp:sasl:2"
#define XML_NS_BIND2 "urn:xmpp:bind:0"
#define XML_NS_FAST "urn:xmpp:fast:0"
#define XML_NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define XML_NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define XML_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XML_NS_XML "http://www.w3.org/XML/1998/namespace"

struct xml_attr {
	const char *ns; /* "" when unqualified */
	const char *name;
	const char *value;
};

struct xml_elem {
	const char *ns;     /* namespace URI, "" if none */
	const char *name;   /* local name */
	const char *prefix; /* prefix as written, "" if none */
	struct xml_attr *attrs;
	size_t nattrs;
	struct xml_elem *children; /* first child */
	struct xml_elem *next;     /* next sibling */
	struct xml_elem *parent;
	char *text; /* direct character data, NUL-terminated */
	size_t textlen;
};

enum xml_error {
	XML_OK = 0,
	XML_E_NOT_WELL_FORMED,
	XML_E_RESTRICTED,        /* DTD, entity declaration, comment, PI */
	XML_E_INVALID_NAMESPACE, /* stream element not in the streams namespace */
	XML_E_BAD_PREFIX,        /* unbound prefix */
	XML_E_POLICY,            /* a size, depth or count limit */
	XML_E_ENCODING,          /* not UTF-8 (RFC 6120 11.6) */
	XML_E_NOMEM,
};

struct xml_handler {
	/* The stream header was parsed; end is the offset just past it. */
	void (*open)(void *ctx, const struct xml_elem *header, uint64_t end);
	/* A depth-1 element is complete, bytes [start, end) of this stream.
	 * With building off only ns and name are set. */
	void (*element)(void *ctx, const struct xml_elem *e, uint64_t start, uint64_t end);
	/* </stream:stream> */
	void (*close)(void *ctx);
};

struct xml_parser;

/* A parser for one stream; max_stanza bounds a depth-1 element in bytes.
 * NULL on out of memory. */
struct xml_parser *xml_new(const struct xml_handler *h, void *ctx, size_t max_stanza);
void xml_free(struct xml_parser *p);

/*
 * Parses len bytes. Returns XML_OK or the error that ends the stream
 * (sticky: later calls return it again). *used is set to the bytes
 * consumed: less than len only after a callback called xml_stop().
 */
enum xml_error xml_feed(struct xml_parser *p, const char *data, size_t len, size_t *used);

/* From a callback: stop right after the current event (STARTTLS, SASL
 * success, or the session is closing). */
void xml_stop(struct xml_parser *p);

/* From a callback: pause right after the current event. xml_feed() then
 * takes all its bytes (those behind the event wait in the parser), and
 * nothing may be fed until xml_resume(), which parses them (its callbacks
 * may pause again). Returns as xml_feed(). (With building off, xml_feed
 * gives Expat its bytes in pieces, plain text passed over between them:
 * a pause there takes the bytes up to the end of its piece only, *used
 * says how many. The login pauses only before success, building on.) */
void xml_pause(struct xml_parser *p);
bool xml_paused(const struct xml_parser *p);
enum xml_error xml_resume(struct xml_parser *p);

/* Starts a new stream: a fresh Expat parser, offsets from 0. Only outside
 * xml_feed(). Returns 0 or -1 on out of memory. */
int xml_reset(struct xml_parser *p);

/* Building depth-1 trees costs memory and time; after login only names
 * are needed. With building off, runs of plain text inside a stanza
 * (xmltext.h) are counted against max_stanza and passed over, not given to
 * Expat (xml_feed). */
void xml_set_build(struct xml_parser *p, bool build);
void xml_set_max_stanza(struct xml_parser *p, size_t max_stanza);

/*
 * After login a held session is idle most of the time, and an Expat
 * parser costs ~10 KiB. xml_release_idle() frees it if the stream is idle
 * (xml_idle); the next xml_feed() makes one again, primed with a stream
 * header carrying the real one's element name and namespace declarations:
 * what follows parses, is limited and is reported (offsets, errors and
 * their line and column) exactly as without. Returns true if it freed one.
 * Only outside xml_feed().
 */
bool xml_release_idle(struct xml_parser *p);
/* True if the stream is between stanzas with nothing half-parsed: depth
 * 1, every byte fed part of a finished item, nothing buffered in Expat, no
 * error, stop or pause. */
bool xml_idle(const struct xml_parser *p);
/* True while no Expat parser is held (released). */
bool xml_released(const struct xml_parser *p);

/* Bytes fed to the current stream so far. */
uint64_t xml_offset(const struct xml_parser *p);
/* 0 before the header, 1 between stanzas, 2+ inside one. */
unsigned xml_depth(const struct xml_parser *p);
/* True if every byte fed so far belongs to a finished top-level item:
 * inside the stream, no stanza or tag half-parsed. Bytes relayed up to
 * here can be followed by the proxy's own elements. */
bool xml_at_boundary(const struct xml_parser *p);
/* The default (content) namespace declared on the stream header, "" if
 * none; valid from the open() callback on. */
const char *xml_default_ns(const struct xml_parser *p);
/* A human-readable account of the last error. */
const char *xml_error_text(const struct xml_parser *p);

/* The value of attribute name (unqualified, or ns given), or NULL. */
const char *xml_attr(const struct xml_elem *e, const char *ns, const char *name);
/* The first child with this namespace (NULL: any) and local name. */
const struct xml_elem *xml_child(const struct xml_elem *e, const char *ns, const char *name);
/* True if e is ns:name. */
bool xml_is(const struct xml_elem *e, const char *ns, const char *name);

/* Appends e serialised; parent_ns is the default namespace in scope
 * (xmlns is written where it differs). Returns 0 or -1. */
int xml_write(struct buf *out, const struct xml_elem *e, const char *parent_ns);
/* Appends s escaped for character data and attribute values. */
int xml_escape(struct buf *out, const char *s, size_t len);

#endif
