"""The fast relay after login (issue 14, target 5): what it must keep.

After login the proxy passes runs of plain text inside a stanza over
instead of giving them to Expat (src/xmltext.c, xml_feed). These cases
prove the bytes still arrive intact and every check still holds: a 900 KB
stanza relayed byte for byte both ways, the same stanza cut at every
offset around its markup and at odd record sizes in both directions,
max_stanza on a large stanza in both directions, restricted XML and
well-formedness right after a long run of text, the bound-identity gate
with a large stanza behind the bind, and many small stanzas in one TLS
record forwarded in order. All against a scripted upstream (fakeserver.py),
whose echo shows exactly what the proxy sent it.
"""

import os
import re
import socket
import time

import fakeserver
import raw
from cases import USERS, case
from cases_bypass_upstream import (ALICE, MALLORY_JID, bind_iq, error_of, login_to_fake, names,
                                   replies_until_closed, server_done)
from cases_hostile import cpu_seconds, fake_upstream, send_quietly, told, with_fake

MESSAGE_RE = fakeserver.MESSAGE_RE


def big_stanza(size, token="big"):
    """A message of about size bytes whose body mixes long runs of plain
    text with everything the fast path must leave to Expat: references,
    tabs and line ends, multi-byte UTF-8, ']' and '>', a CDATA section,
    child elements, a long attribute."""
    parts, n = [], 0
    i = 0
    while n < size:
        run = "x" * (3000 + 977 * (i % 7))  # plain runs of varying length
        tail = [
            "&amp;&lt;&#65;&#x263A;", "\t\n\r\n", "\u00e9\u263a\U0001F600",
            "]>]] >", "<![CDATA[a<b&c]]>", f"<i n='{i}'>in</i>", "<e/>",
        ][i % 7]
        piece = run + tail
        parts.append(piece)
        n += len(piece.encode())
        i += 1
    attr = "a" * 2000
    return (f"<message to='{ALICE}/r' type='chat' id='{token}' x='{attr}'>"
            f"<body>{''.join(parts)}</body><thread>t1</thread></message>").encode()


def cuts_everywhere(st, step_sizes=(1, 3, 17, 255, 256, 257, 4095, 4097, 16383, 16385)):
    """Cut positions in st: every offset within 3 bytes of each byte that is
    not plain text (so every tag, reference and multi-byte character is
    split at each of its offsets), then odd record sizes in between."""
    plain = set(range(0x20, 0x80)) - {ord("<"), ord("&"), ord("]")}
    cuts = set()
    for i, b in enumerate(st):
        if b not in plain:
            cuts.update(range(max(1, i - 3), min(len(st), i + 4)))
    pos, k = 0, 0
    while pos < len(st):
        pos += step_sizes[k % len(step_sizes)]
        k += 1
        if pos < len(st):
            cuts.add(pos)
    return sorted(cuts)


def pieces(data, cuts):
    prev = 0
    for c in cuts + [len(data)]:
        if c > prev:
            yield data[prev:c]
            prev = c


def echo_in_pieces(conn):
    """after(): reads one message and sends it back cut everywhere, one
    write (one TLS record at least) per piece, then drains."""
    try:
        st = conn.expect(MESSAGE_RE, timeout=30, what="the large message")
    except (fakeserver.Closed, fakeserver.Timeout):
        return
    conn.note(f"echoing {len(st)} bytes in pieces")
    for p in pieces(st, cuts_everywhere(st)):
        conn.send(p)
    conn.drain(timeout=30)


def logged_in(ctx, script, **keys):
    srv = fake_upstream(ctx, script)
    px = ctx.proxy(upstream_port=srv.port, **keys)
    c = ctx.raw(px.port, timeout=30)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except (AssertionError, OSError) as e:
        ctx.require(False, f"raw login through the proxy failed: {e}")
    return srv, px, c, jid


def got_back(ctx, c, st, mark, what, srv=None):
    """The client received st again, byte for byte, after offset mark (and,
    given srv, the server's first connection received it byte for byte)."""
    el = c.next_element(timeout=30)
    ctx.check(el is not None and raw.local(el.tag) == "message",
              f"{what}: no message came back: {c.describe(el)}")
    back = c.received[mark:]
    ctx.check(st in back, f"{what}: the {len(st)}-byte stanza did not come back byte for byte "
              f"({len(back)} bytes came; first difference at "
              f"{next((i for i, (a, b) in enumerate(zip(st, back)) if a != b), min(len(st), len(back)))})")
    if srv is not None:
        conn = srv.wait_conn(0)
        ctx.check(conn is not None and st in conn.received,
                  f"{what}: the server did not receive it byte for byte")


@case("relay_900k_intact", prosody=None)
@with_fake
def relay_900k_intact(ctx):
    """max_stanza = 1M: a 900 KB message (long text runs mixed with
    references, line ends, UTF-8, ']' and '>', CDATA, children, a 2000-byte
    attribute) reaches the server byte for byte, comes back from its echo
    byte for byte, and the session goes on (a small message after it)."""
    srv, px, c, jid = logged_in(ctx, fakeserver.good, max_stanza="1M")
    st = big_stanza(900_000)
    mark = len(c.received)
    c.send(st)
    got_back(ctx, c, st, mark, "900 KB message", srv)
    c.send(f"<message to='{jid}' type='chat' id='after'><body>after</body></message>")
    el = c.next_element(timeout=10)
    ctx.check(el is not None and el.get("id") == "after",
              f"no message after the large one: {c.describe(el)}")
    ctx.check(px.alive(), "proxy died")


@case("relay_split_everywhere", prosody=None)
@with_fake
def relay_split_everywhere(ctx):
    """max_stanza = 1M: a 300 KB message sent in ~1,500 writes cut at every
    offset within 3 bytes of each tag, reference and multi-byte character and
    at odd record sizes (1, 3, 17, 255-257, 4095, 4097, 16383, 16385); the
    server receives it byte for byte and echoes it cut the same way; the
    client gets it byte for byte."""
    srv, px, c, jid = logged_in(ctx, fakeserver.login_then(echo_in_pieces), max_stanza="1M")
    st = big_stanza(300_000, token="split")
    cuts = cuts_everywhere(st)
    ctx.note(f"{len(cuts) + 1} pieces")
    mark = len(c.received)
    for p in pieces(st, cuts):
        c.send(p)
    got_back(ctx, c, st, mark, "message cut everywhere", srv)
    ctx.check(px.alive(), "proxy died")


@case("relay_large_over_max_stanza", prosody=None)
@with_fake
def relay_large_over_max_stanza(ctx):
    """max_stanza = 512k, a logged-in client sends a 900 KB message of plain
    text: it is told policy-violation, the session's close says so, and the
    server got at most the 512 KB the limit allows of it (no end tag)."""
    srv, px, c, jid = logged_in(ctx, fakeserver.good, max_stanza="512k")
    body = b"p" * 900_000
    send_quietly(c, f"<message to='{jid}' type='chat' id='over'><body>".encode() + body
                 + b"</body></message>")
    told(ctx, c, "policy-violation", timeout=15)
    s = ctx.session(px, 0)
    s.expect(ctx, "stream_error", dir="s2c", condition="policy-violation", by="proxy")
    close = s.expect(ctx, "close")
    if close:
        ctx.check("policy-violation" in str(close.get("reason")), f"close reason {close.get('reason')!r}")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "oversized message")
    got = conn.received.count(b"p")
    ctx.check(got <= 512 * 1024 and b"</message>" not in conn.received[-2000:],
              f"the server got {got} bytes of a body over a 512k limit")


@case("relay_large_over_max_stanza_s2c", prosody=None)
@with_fake
def relay_large_over_max_stanza_s2c(ctx):
    """max_stanza = 512k and the server sends a logged-in client a 900 KB
    message: the server is told policy-violation, the client got at most
    512 KB of it, the proxy logs the stream error it sent upstream."""
    srv, px, c, jid = logged_in(ctx, fakeserver.login_then(fakeserver.big_stanza(900_000)),
                                max_stanza="512k")
    ctx.check(c.wait_closed(15), "client connection not closed")
    s = ctx.session(px, 0)
    s.expect(ctx, "stream_error", dir="c2s", condition="policy-violation", by="proxy")
    conn = srv.wait_conn(0)
    if conn is not None and conn.done.wait(15):
        ctx.check(b"policy-violation" in conn.received,
                  f"the server was not told policy-violation: {conn.received[-300:]!r}")
    ctx.check(c.received.count(b"w") <= 512 * 1024,
              f"the client got {c.received.count(b'w')} bytes of a body over a 512k limit")


@case("relay_checks_after_long_text", prosody=None)
@with_fake
def relay_checks_after_long_text(ctx):
    """max_stanza = 1M: right after 100 KB of plain text inside a body (the
    part Expat is spared), a comment is still restricted-xml, a control
    character, a ']]>' and a stray '</' are still not-well-formed, and none
    of the stanza's end reaches the server."""
    bad = [
        ("<!-- c -->", "restricted-xml"),
        ("<?pi x?>", "restricted-xml"),
        ("\x01", "not-well-formed"),
        ("]]>", "not-well-formed"),
        ("</nope>", "not-well-formed"),
        ("&undefined;", "not-well-formed"),
    ]
    for i, (junk, want) in enumerate(bad):
        srv, px, c, jid = logged_in(ctx, fakeserver.good, max_stanza="1M")
        st = (f"<message to='{jid}' type='chat' id='j{i}'><body>".encode() + b"t" * 100_000
              + junk.encode() + b"tail</body></message>")
        send_quietly(c, st)
        told(ctx, c, want, timeout=10)
        conn = srv.wait_conn(0)
        server_done(ctx, c, conn, f"{junk!r} after long text")
        ctx.check(b"tail</body>" not in conn.received,
                  f"{junk!r} after long text: the stanza's end reached the server")
        srv.stop()
        px.cleanup()


@case("relay_gate_holds_large_stanza", prosody=None)
@with_fake
def relay_gate_holds_large_stanza(ctx):
    """users_deny = mallory, the server binds the client as mallory: a 200 KB
    message pipelined behind the bind (from='alice@...', the identity the
    client claims) never reaches the server, and the client is told
    policy-violation."""
    srv = fake_upstream(ctx, fakeserver.plain_then(
        fakeserver.serve_stanzas([fakeserver.bind_result(MALLORY_JID)])))
    px = ctx.proxy(upstream_port=srv.port, users_deny="mallory", max_stanza="1M")
    c = login_to_fake(ctx, px)
    big = (f"<message from='{ALICE}/r' to='{ALICE}/r' type='chat' id='gated'><body>".encode()
           + b"g" * 200_000 + b"</body></message>")
    send_quietly(c, bind_iq("r", "b1").encode() + big)
    got = replies_until_closed(c, timeout=10)
    cond = error_of(got)
    ctx.check(cond == "policy-violation",
              f"client got {names(got) or c.describe()} (stream error {cond!r}), want policy-violation")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "large message behind a refused bind")
    ctx.check(b"<message" not in conn.since("restart") and b"ggg" not in conn.received,
              "the server received the message pipelined behind the refused bind")


@case("relay_many_stanzas_one_record", prosody=None)
@with_fake
def relay_many_stanzas_one_record(ctx):
    """300 small messages in one write (a few TLS records, each holding many
    stanzas), then 40 messages of 20 KB in one write: the server receives
    them all, in order, byte for byte, and the client gets every echo back
    in order."""
    srv, px, c, jid = logged_in(ctx, fakeserver.login_then(fakeserver.serve_stanzas()),
                                max_stanza="1M")
    small = [f"<message to='{jid}' type='chat' id='s{i}'><body>m{i} {'z' * (i % 50)}</body>"
             "</message>" for i in range(300)]
    large = [f"<message to='{jid}' type='chat' id='l{i}'><body>{chr(97 + i % 26) * 20000}"
             "</body></message>" for i in range(40)]
    want = small + large
    c.send("".join(small))
    c.send("".join(large))
    ids = []
    for _ in want:
        el = c.next_element(timeout=15)
        if el is None:
            break
        ids.append(el.get("id"))
    ctx.check(ids == [re.search(r"id='([^']+)'", m).group(1) for m in want],
              f"the client got {len(ids)} of {len(want)} echoes, or out of order: {ids[:5]}...")
    conn = srv.wait_conn(0)
    ctx.check(conn is not None and [s.decode() for s in conn.stanzas[-len(want):]] == want,
              f"the server did not receive the {len(want)} messages in order, byte for byte "
              f"({len(conn.stanzas) if conn else 0} stanzas)")


def proxy_cpu(px):
    """The proxy process's CPU seconds so far (utime + stime)."""
    with open(f"/proc/{px.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@case("relay_held_tag_linear", prosody=None)
@with_fake
def relay_held_tag_linear(ctx):
    """max_stanza = 1M: a logged-in client sends a 900 KB start tag (an
    attribute of ">>>>" + 252 plain bytes + a tab, repeated) in 16 KB
    writes. Expat holds the unfinished tag and rescans it on every call, so
    the fast relay must not cut each read into pieces around the plain runs
    while it does (it took 3 s of CPU; Expat alone in the same reads, a few
    ms): the proxy spends well under a second, and the tag is still refused
    (attribute too long, policy-violation) with no end of it upstream."""
    srv, px, c, jid = logged_in(ctx, fakeserver.good, max_stanza="1M")
    seg = b">>>>" + b"a" * 252 + b"\t"
    tag = f"<message to='{jid}' type='chat' id='held'><x a='".encode() + seg * (900_000 // len(seg))
    before = proxy_cpu(px)
    for i in range(0, len(tag), 16384):
        if not send_quietly(c, tag[i:i + 16384]):
            break
    send_quietly(c, b"'/></message>")
    told(ctx, c, "policy-violation", timeout=30)
    spent = proxy_cpu(px) - before
    ctx.note(f"proxy CPU for the 900 KB held tag: {spent:.2f} s")
    ctx.check(spent < 1.0, f"the proxy spent {spent:.2f} s of CPU on one 900 KB start tag")
    conn = srv.wait_conn(0)
    server_done(ctx, c, conn, "held tag")
    ctx.check(b"'/></message>" not in conn.received, "the refused tag's end reached the server")


def bytewise(c):
    """Makes the raw client c send every byte in a TLS record (a TCP write
    before TLS) of its own."""
    def send(data):
        if isinstance(data, str):
            data = data.encode()
        for i in range(len(data)):
            c.sock.sendall(data[i:i + 1])
    c.send = send


def send_paced(c, data):
    """Sends data a byte per TLS record, paced (TCP_NODELAY, a pause every
    4 records) so that the proxy reads few records at a time, as from a
    slow peer. Returns how many bytes were sent."""
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        try:
            c.sock.sendall(data[i:i + 1])
        except OSError:
            return i
        if i % 4 == 0:
            time.sleep(0.00002)
    return len(data)


@case("prelogin_tag_bytewise_linear", prosody=None)
@with_fake
def prelogin_tag_bytewise_linear(ctx):
    """Before login (no credentials), a 60 KB start tag sent one byte per
    TLS record. Expat 2.5 tokenizes a tag it holds again on every call (it
    cost 1.6 s of CPU for 64 KB): xml.c keeps input that cannot end the tag
    until it doubles what Expat holds, so the proxy (all its processes)
    spends on it no more than twice what 60 KB of whitespace sent the same
    way costs (where nothing is held), and the tag is still refused (its
    attribute is too long: policy-violation), with nothing of it
    upstream."""
    srv = fake_upstream(ctx, fakeserver.good)
    px = ctx.proxy(upstream_port=srv.port)
    c = ctx.raw(px.port, timeout=30)
    c.open_stream()
    c.starttls()
    c.open_stream()
    size = 60_000
    before = cpu_seconds(px.proc.pid)
    sent = send_paced(c, b" " * size)
    base = cpu_seconds(px.proc.pid) - before
    ctx.require(sent == size, f"the whitespace was cut after {sent} bytes")
    tag = f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN' a='".encode() + b"x" * size
    before = cpu_seconds(px.proc.pid)
    sent = send_paced(c, tag)
    spent = cpu_seconds(px.proc.pid) - before
    ctx.check(sent == len(tag), f"the tag was cut after {sent} bytes")
    send_quietly(c, b"'/>")
    told(ctx, c, "policy-violation", timeout=30)
    ctx.note(f"proxy CPU, 60 KB a byte per record: {base:.2f} s whitespace, "
             f"{spent:.2f} s one start tag")
    ctx.check(spent < 2 * base + 0.1,
              f"the proxy spent {spent:.2f} s of CPU on one 60 KB start tag, "
              f"{base:.2f} s on as much whitespace")
    conn = srv.wait_conn(0, timeout=1)
    ctx.check(conn is None or b"x" * 100 not in conn.received,
              "the refused tag reached the server")
    ctx.check(px.alive(), "proxy died")


@case("login_bytewise", prosody=None)
@with_fake
def login_bytewise(ctx):
    """A legitimate login whose every stanza arrives one byte per record
    (TCP segment before STARTTLS, TLS record after) works, and so does a
    message after it with a 3000-byte id attribute sent the same way (a
    tag Expat holds long enough for the input to be kept from it): it
    reaches the server and comes back byte for byte."""
    srv = fake_upstream(ctx, fakeserver.good)
    px = ctx.proxy(upstream_port=srv.port)
    c = ctx.raw(px.port, timeout=30)
    bytewise(c)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except (AssertionError, OSError) as e:
        ctx.require(False, f"a login sent a byte per record failed: {e}")
    st = (f"<message to='{jid}' type='chat' id='{'i' * 3000}'>"
          f"<body>byte &amp; byte</body></message>").encode()
    mark = len(c.received)
    c.send(st)
    got_back(ctx, c, st, mark, "message with a 3000-byte id", srv)
    ctx.check(px.alive(), "proxy died")
