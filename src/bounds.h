/*
 * Every fixed bound of the proxy, in one place, each with the reason for its
 * number. Values a lab may want to change are configuration keys whose
 * defaults are the DEFAULT_* constants here.
 */
#ifndef XI_BOUNDS_H
#define XI_BOUNDS_H

/* One read(2)/SSL_read per wakeup. 16 KiB is one TLS record: a full record
 * is handed to us at once and Expat never buffers more than this on top of
 * the element it is building. */
#define READ_CHUNK 16384

/* Output queue of a leg: stop reading the peer leg above HIGH, resume below
 * LOW (SSLsplit uses half its limit; the gap avoids toggling watchers on
 * every small write). */
#define OUTBUF_HIGH (256 * 1024)
#define OUTBUF_LOW (64 * 1024)
/* A drained output queue larger than this is freed (buf.c starts at 1 KiB,
 * most stanzas fit in 4). */
#define OUTBUF_KEEP (4 * 1024)

/* A stanza before login: large enough for GSSAPI tokens and long feature
 * lists, far below Prosody's 256 KiB (ejabberd uses 8 KiB). */
#define DEFAULT_MAX_STANZA_PRELOGIN (64 * 1024)
/* After login, as Prosody's c2s_stanza_size_limit. */
#define DEFAULT_MAX_STANZA (256 * 1024)
/* XMPP payloads nest a few levels (message/event/items/item/entry/...);
 * 64 leaves room for any real extension and stops stack-heavy nesting. */
#define MAX_XML_DEPTH 64
/* Attributes per element: stanzas carry fewer than ten. */
#define MAX_XML_ATTRS 64
/* One attribute value: JIDs are at most 3071 bytes (RFC 7622). */
#define MAX_XML_ATTR_LEN 8192
/* A stream header is one start tag with a handful of attributes. */
#define MAX_STREAM_HEADER 4096
/* The prefix of a relayed stream element, kept so the proxy's own errors
 * and closes use it ("stream" in every real client and server); a longer
 * one is refused with <bad-namespace-prefix/> rather than cut, since a cut
 * prefix would make the proxy write a mismatched end tag. */
#define MAX_STREAM_PREFIX 64
/* A JID: localpart, domainpart and resourcepart of at most 1023 bytes
 * each, plus '@' and '/' (RFC 7622 3.1). */
#define MAX_JID 3071

/* Seconds to finish the TCP connect and TLS handshake to the upstream. */
#define DEFAULT_CONNECT_TIMEOUT 10
/* Seconds from connect until SASL success: slowloris bound. */
#define DEFAULT_LOGIN_TIMEOUT 60
/* Seconds a leg may take to flush its output when the session closes. */
#define CLOSE_LINGER 5
/* Seconds the proxy waits, after one peer ended its stream, for the other
 * to end its own (RFC 6120 4.4: "a reasonable amount of time"), and bytes
 * it reads after a stream's end before it stops reading that leg: a peer
 * that closes and goes on sending must not keep a session alive. */
#define STREAM_CLOSE_WAIT 10
#define MAX_TRAILING (64 * 1024)
/* Seconds between two sweeps of the logged-in sessions: a leg that moved
 * no byte in a whole interval gives back its Expat parser (~10 KiB, made
 * again when bytes come) and its empty output queue, so a held session is
 * small 1-2 s after it went quiet. Per stanza instead, a chatty session
 * paid ~3 us per stanza and leg to remake the parser (8 us per message
 * round trip, 13 % CPU with 20 round trips per login); a sweep of 10,000
 * sessions a second costs well under 0.1 % of a core. */
#define IDLE_SWEEP 1.0

/* Descriptors besides the two of each session and one per listener: stdio
 * (3), both logs twice while a reload reopens them (4), the accept reserve
 * and the notify socket (2), libev's own (3), and what a reload opens for
 * a moment (the configuration, a certificate file, the resolver's socket
 * and files: 5); twice that. */
#define NOFILE_FIXED 32

/* Concurrent sessions; each costs two fds and ~tens of KiB. */
#define DEFAULT_MAX_SESSIONS 20000
/* Concurrent sessions from one client address. */
#define DEFAULT_MAX_PER_ADDR 1000

/* SASL exchange: steps per login and payload per step. Real mechanisms
 * use at most 3 round trips; GSSAPI tokens stay below 48 KiB base64. */
#define MAX_SASL_STEPS 16
#define MAX_SASL_PAYLOAD (48 * 1024)
/* The pause after a failed login when auth_failures is set: between MIN
 * and MIN + SPREAD seconds, random, so timing tells a guesser nothing and
 * each guess costs time (OpenSMTPD pauses 1 s). */
#define AUTH_FAILURE_DELAY_MIN 0.2
#define AUTH_FAILURE_DELAY_SPREAD 0.8

/* Client bytes held after a bind request until the server's answer is
 * checked against users_deny/users_allow (above it the client leg stops
 * reading): room for a client that pipelines its first stanzas. */
#define MAX_BIND_HOLD (64 * 1024)

/* Login attempts (auth elements) per session before the proxy gives up. */
#define MAX_AUTH_ATTEMPTS 8

/* Mechanisms kept from one <mechanisms> list; names are at most 20 chars
 * (RFC 4422), a longer list is an attack on the log. */
#define MAX_MECHANISMS 32
#define MAX_MECH_NAME 20
/* Inline features of one SASL2 <authentication> (XEP-0388 2.2) named in
 * the log: servers offer three or four (Bind2, SM, FAST); each name is
 * cut at MAX_INLINE_NAME bytes. */
#define MAX_INLINE 16
#define MAX_INLINE_NAME 32

/* Event log: memory queued for a slow disk before lines are dropped (and
 * counted). */
#define DEFAULT_EVENT_LOG_QUEUE (16 * 1024 * 1024)
/* Sessions a log_gap line names (one per lost session, up to this; the
 * line says whether more were lost). */
#define EVLOG_GAP_SESSIONS 256

/* users_allow/users_deny patterns, and the length of one. */
#define MAX_USER_PATTERNS 64
#define MAX_USER_PATTERN_LEN 256

/* Listening sockets per kind. */
#define MAX_LISTENERS 16

/* Forged certificates (forge.c): a lab sees a few hundred domains; each
 * cached leaf is ~2 KiB (certificate, P-256 key, names), so the cap is
 * ~32 MiB; making one costs ~0.4 ms, a cache hit a hash lookup. */
#define DEFAULT_FORGE_CACHE 1024
#define MAX_FORGE_CACHE 16384
/* Validity of a forged leaf: long enough for any session, short enough
 * that a leaked one is soon useless. It starts this long before now for
 * clients whose clocks are behind. */
#define FORGE_VALIDITY (7 * 24 * 3600)
#define FORGE_BACKDATE (3600)
/* Names a forged leaf carries (dNSName and xmppAddr each): a mirrored
 * server certificate may name more; the rest are not copied. */
#define MAX_FORGE_NAMES 32
/* One domain: RFC 1035 (253 characters without the root dot, labels of
 * 63). A longer request is refused, not cut. */
#define MAX_DOMAIN 253
#define MAX_DOMAIN_LABEL 63

/* Transcripts (transcript.c): bytes per session file by default (a login
 * is a few KiB; 1 MiB keeps the first minutes of a chatty session), and
 * memory queued for the writer thread across all sessions before chunks
 * are dropped (and the gap marked in the file). */
#define DEFAULT_TRANSCRIPT_MAX (1024 * 1024)
#define TRANSCRIPT_QUEUE (32 * 1024 * 1024)
/* An element name the redactor keeps to decide whether its content is
 * secret: longer names are never secret ones. */
#define TRANSCRIPT_NAME_MAX 32

/* Shared state in Redis (shared_state). One lookup may wait this long for
 * Redis before it counts as a Redis failure: a Redis on the same network
 * answers in well under a millisecond, so half a second means it is down
 * or stuck, and a login waits that long at most once per outage (the link
 * is then down, and lookups fail at once until it is back). */
#define SHARED_LOOKUP_TIMEOUT 0.5
/* Reconnecting: the first retry after MIN seconds, doubling up to MAX, so
 * a Redis that is back is used again within MAX seconds, and a dead one
 * costs one connect attempt every MAX seconds. */
#define SHARED_RECONNECT_MIN 0.2
#define SHARED_RECONNECT_MAX 5.0
/* Every HEARTBEAT seconds an instance renews its registration and its
 * session counts, which otherwise expire INSTANCE_TTL seconds after the
 * last renewal: an instance killed with sessions open stops counting
 * against max_per_addr within that time (three missed heartbeats). */
#define SHARED_HEARTBEAT 5.0
#define SHARED_INSTANCE_TTL_MS 15000
/* A Redis database index: Redis has 16 unless configured otherwise; a
 * larger number than this is a typing error, not a set-up. */
#define SHARED_DB_MAX 65535
/* The most elements in one reply from Redis: the scripts answer an
 * integer or a flat pair, so anything longer (or nested) is not Redis
 * answering them, and is refused before hiredis allocates it (hiredis
 * 0.14 would take up to 2^31-1 elements, 16 GiB, and free them one by
 * one on the loop). */
#define SHARED_REPLY_MAX_ELEMENTS 8
/* PROXY protocol from a balancer (listen ... proxy). A version 1 line is
 * at most 107 bytes with its CRLF (proxy-protocol.txt 2.1). A version 2
 * header is 16 bytes and a body whose length it states: the addresses (36
 * for IPv6, 216 for UNIX) and TLVs; what HAProxy sends (authority <= 255,
 * unique id <= 128, the SSL TLV with version, cipher, CN and algorithms,
 * CRC32C, netns) stays below 1 KiB, so 1536 in all is room for it and any
 * one more reasonable TLV; a longer header is refused, not buffered. */
#define PROXY_V1_MAX 107
#define PROXY_V2_MAX 1536
/* Seconds a trusted balancer has to deliver the whole header: it sends it
 * at once with the connection's first segment (2.2: "the sender must
 * always ensure that the header is sent at once"); 3 s covers two
 * retransmissions of a lost segment (RTO 1 s, then 2 s), and a sender
 * slower than that holds a descriptor for nothing. */
#define PROXY_HEADER_TIMEOUT 3.0
/* proxy_from networks. */
#define MAX_PROXY_FROM 64

/* metrics_listen: a scrape is one short GET; 4 KiB holds its request line
 * and the headers Prometheus sends (about 300 bytes) many times over. At
 * most 16 connections at once (a scraper or two, and curl), each given 5 s
 * to send its request and take the answer: past that it is closed, so
 * slowloris and a flood cost a few descriptors, never the XMPP sessions. */
#define METRICS_REQUEST_MAX 4096
#define METRICS_MAX_CLIENTS 16
#define METRICS_TIMEOUT 5.0

/* Upstream TLS resumption (tickets.c): upstreams (address, name, ALPN)
 * whose sessions are kept, the least recently filled one making way; one
 * proxy has one upstream, or a handful through upstream_original_dst on a
 * gateway. Sessions kept per upstream: each is used once, a resumed
 * handshake brings one new ticket (a full one two, in OpenSSL and
 * Prosody), so a few cover the logins that start at once. And the
 * seconds a session is kept at most, whatever the server's ticket
 * lifetime (RFC 8446 allows 7 days): a replaced upstream certificate is
 * met again within the hour. */
#define TICKETS_UPSTREAMS 16
#define TICKETS_PER_UPSTREAM 8
#define TICKETS_MAX_AGE 3600

/* workers: forked event loops sharing the ports. The default is the
 * online cores; more than 64 would be more processes than any machine
 * this runs on has cores, and every per-worker table below is sized by it. */
#define WORKERS_MAX 64
/* The workers' shared address table (addrtab.c, open addressing in the
 * MAP_SHARED region): one entry per (address, worker) with sessions or
 * attempts in flight, and one per address with a failure window. 2^17
 * slots, 40 bytes each (5 MiB of shared memory, touched as used); at most
 * three quarters are filled, so probes stay short: 98,304 entries, room
 * for the default max_sessions (20,000) from distinct addresses plus
 * 78,000 failure windows. Full, it fails closed: a new connection is
 * refused and a failure that cannot be counted closes its session. */
#define ADDRTAB_SHARED_SLOTS (1u << 17)
/* A worker that died is forked again after a pause that starts at 0.1 s
 * and doubles for each death within WORKER_STABLE seconds of its start,
 * up to 10 s: a worker that crashes at once (a bad file, a bug hit by
 * every login) costs a fork every 10 s, not a fork loop. */
#define WORKER_RESPAWN_MIN 0.1
#define WORKER_RESPAWN_MAX 10.0
#define WORKER_STABLE 10.0
/* After SIGTERM the supervisor waits this long past CLOSE_LINGER for the
 * workers to drain, then kills what is left. SIGHUP: the seconds it
 * waits for every worker to say it applied the reload, before it logs
 * the one reload event. */
#define WORKER_STOP_GRACE 5.0
#define WORKER_RELOAD_WAIT 5.0

/* Upstream chains verified (verifycache.c): entries kept per client
 * context (the same few upstreams as above, a chain or two each while a
 * certificate is replaced), and the seconds a verification stands at most,
 * so that a CA or certificate revoked by replacing files is met within
 * minutes even without a reload (a reload empties the cache at once). */
#define VERIFY_CACHE_ENTRIES 32
#define VERIFY_CACHE_TTL 300

#endif
