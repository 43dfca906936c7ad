"""A held session's memory (issue 14 item 2): after login the proxy frees a
leg's Expat parser whenever its stream is idle between stanzas and makes it
again, primed with the stream header's names, when bytes come (xml.h,
xml_set_release); it frees drained output queues and the SASL decoder's
state too. None of it may change what the proxy lets through, refuses or
logs. These cases cross the release/recreate boundary on purpose with a
real Prosody and raw clients: a stanza split at every byte with idle
periods between, whitespace keepalives (CRLF split), a prefix declared on
the stream header and used by a later stanza, an unbound prefix after idle,
errors whose line and column must count from the stream's start, the
stanza limit across idle periods, the stream's close after idle, and
XEP-0198 <r/>/<a/> against Prosody's mod_smacks.
"""

import time

import harness
import raw
from cases import USERS, case

NS_STREAM = raw.NS_STREAM
NS_BIND = raw.NS_BIND
SM3 = "urn:xmpp:sm:3"
# a pause long enough that each piece is read, fed and the parser released
# before the next one arrives (the proxy reads within a millisecond)
IDLE = 0.02


def login(ctx, px, header=None, resource="idle"):
    """A raw PLAIN login (STARTTLS first) whose post-login stream header is
    header (default: raw's); returns (client, bound JID, the bytes of this
    last stream sent so far)."""
    c = ctx.raw(px.port)
    try:
        f = c.open_stream()
        if raw.has_starttls(f) != "none":
            c.starttls()
            c.open_stream()
        c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
        el = c.next_element()
        ctx.require(el is not None and raw.local(el.tag) == "success",
                    f"no <success/>: {c.describe(el)}")
        c._reset_parser()
        hdr = header or raw.header()
        c.send(hdr)
        c.expect("features")
        bind = (f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>{resource}"
                "</resource></bind></iq>")
        c.send(bind)
        el = c.expect("iq")
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    jid = el.find(f"{raw.q(NS_BIND, 'bind')}/{raw.q(NS_BIND, 'jid')}")
    ctx.require(jid is not None, f"bind failed: {c.describe(el)}")
    return c, jid.text, hdr + bind


def send_slowly(c, data, idle=IDLE):
    """data one byte per write, a pause after each (each byte its own TLS
    record: the proxy feeds each alone)."""
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(idle)


def echo(ctx, c, jid, body, what, send=None):
    """A message to the client's own JID comes back with body."""
    msg = f"<message to='{jid}' type='chat' id='m-{what}'><body>{body}</body></message>"
    (send or c.send)(msg.encode())
    el = c.next_element(timeout=10)
    while el is not None and raw.local(el.tag) == "presence":  # our own, broadcast back
        el = c.next_element(timeout=10)
    got = el.findtext(raw.q(raw.NS_CLIENT, "body")) if el is not None else None
    ctx.check(el is not None and raw.local(el.tag) == "message" and got == body,
              f"{what}: the message did not come back whole: {c.describe(el)}")


def ended_cleanly(ctx, px, c, reason="client ended the stream"):
    """The client ends its stream; the server's end comes back; the close
    event has the reason and no error."""
    c.send(f"</stream:stream>")
    ctx.check(c.wait_closed(timeout=5), "the proxy did not close after both streams ended")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    if close:
        ctx.check(close.get("reason") == reason,
                  f"close reason {close.get('reason')!r}, want {reason!r}")
        ctx.check(close.get("trailing_bytes") == 0, f"trailing bytes: {close}")
    s.expect(ctx, "login", outcome="success")
    return s


@case("idle_stanza_split_every_byte")
def idle_stanza_split_every_byte(ctx):
    """A logged-in client sends a message one byte per TLS record with a
    pause after each (the parser is released between stanzas, not inside
    one: each byte is fed to a stanza in flight), then after a 1.5 s idle
    another message whole, then one split at every byte that begins right
    after idle: both come back whole, nothing is refused, the session ends
    cleanly."""
    px = ctx.proxy()
    c, jid, _ = login(ctx, px)
    echo(ctx, c, jid, "split at every byte \u00e9\u20ac", "split", send=lambda d: send_slowly(c, d))
    time.sleep(1.5)
    echo(ctx, c, jid, "after a long idle", "idle")
    echo(ctx, c, jid, "x", "split again", send=lambda d: send_slowly(c, d))
    ended_cleanly(ctx, px, c)


@case("idle_whitespace_keepalives")
def idle_whitespace_keepalives(ctx):
    """Whitespace keepalives (RFC 6120 4.6.1) between stanzas, a CR and its
    LF in separate records (a trailing CR waits in Expat: the parser is not
    released on it), spaces and tabs: all relayed, then a message round
    trip; bytes_c2s counts every byte sent."""
    px = ctx.proxy()
    c, jid, _ = login(ctx, px)
    for piece in (" ", "\r", "\n", "\t", " \r\n ", "\n"):
        c.send(piece)
        time.sleep(IDLE)
    echo(ctx, c, jid, "after keepalives", "keepalive")
    s = ended_cleanly(ctx, px, c)
    ctx.check(not s.all("policy"), f"a policy event for keepalives: {s.all('policy')}")


@case("idle_header_prefix_used_later")
def idle_header_prefix_used_later(ctx):
    """The post-login stream header declares xmlns:cl='jabber:client' and
    xmlns:x='urn:xi:test'; after idle periods the client sends
    <cl:message> with <cl:body> and an x: child (prefixes only the header
    binds): Prosody takes it and it comes back. The recreated parser must
    have the header's declarations in scope."""
    px = ctx.proxy()
    hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           f"xmlns:stream='{NS_STREAM}' xmlns:cl='jabber:client' xmlns:x='urn:xi:test' "
           "to='lab.test' version='1.0' xml:lang='en'>")
    c, jid, _ = login(ctx, px, header=hdr)
    time.sleep(0.2)
    c.send(f"<cl:message to='{jid}' type='chat' id='p1'><cl:body>prefixed</cl:body>"
           "<x:note/></cl:message>")
    el = c.next_element(timeout=10)
    ctx.check(el is not None and raw.local(el.tag) == "message" and
              el.findtext(raw.q(raw.NS_CLIENT, "body")) == "prefixed",
              f"the prefixed message did not come back: {c.describe(el)}")
    time.sleep(0.2)
    send_slowly(c, f"<cl:presence/>")
    echo(ctx, c, jid, "after", "after prefixed")
    ended_cleanly(ctx, px, c)


@case("idle_unbound_prefix_after_idle")
def idle_unbound_prefix_after_idle(ctx):
    """After idle, a stanza with a prefix the header never declared
    (<zz:message/>): bad-namespace-prefix as without any release, the
    session ends and says why."""
    px = ctx.proxy()
    c, jid, _ = login(ctx, px)
    time.sleep(0.2)
    c.send("<zz:message/>")
    ctx.check(c.stream_error() == "bad-namespace-prefix",
              f"want bad-namespace-prefix: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    ctx.check(close and "bad-namespace-prefix" in close.get("reason", ""),
              f"close reason: {close}")


@case("idle_error_position")
def idle_error_position(ctx):
    """After idle points, a mismatched end tag on the stream's second line:
    the error text says the line and column counted from the stream's start
    (a recreated parser counts from its own first byte unless carried)."""
    px = ctx.proxy()
    c, jid, sent = login(ctx, px)
    time.sleep(0.1)
    c.send(f"<presence/>\n")
    time.sleep(0.1)
    lead = "  <message><body>"
    c.send(lead)
    time.sleep(0.1)
    c.send("</message>")
    ctx.check(c.stream_error() == "not-well-formed", f"want not-well-formed: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    # Expat points at the end tag's name, just past its "</": line 2
    # (after the newline), 0-based column len(lead) + 2 (what a proxy that
    # never releases its parser says too)
    want = f"at line 2 column {len(lead) + 2}"
    ctx.check(close and want in close.get("reason", ""),
              f"close reason should say {want!r}: {close}")


@case("idle_max_stanza_across_idle")
def idle_max_stanza_across_idle(ctx):
    """max_stanza = 4k: a 3 KB message sent in pieces with idle between
    passes; a 6 KB one sent the same way is refused with policy-violation
    (the stanza's size counts from its first byte, fed across idle
    periods)."""
    px = ctx.proxy(max_stanza="4k")
    c, jid, _ = login(ctx, px)

    def pieces(data):
        for i in range(0, len(data), 700):
            c.send(data[i:i + 700])
            time.sleep(IDLE)
    echo(ctx, c, jid, "s" * 3000, "3 KB", send=pieces)
    time.sleep(0.1)
    try:
        pieces(f"<message to='{jid}' type='chat'><body>{'b' * 6000}</body></message>".encode())
    except OSError:
        pass
    ctx.check(c.stream_error() == "policy-violation", f"want policy-violation: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    ctx.check(close and "policy-violation" in close.get("reason", ""), f"close: {close}")


@case("idle_stream_close_after_idle")
def idle_stream_close_after_idle(ctx):
    """After 1 s idle the client's </stream:stream> arrives one byte at a
    time: relayed, the server's end comes back, the session closes with
    "client ended the stream" and no trailing bytes."""
    px = ctx.proxy()
    c, jid, _ = login(ctx, px)
    time.sleep(1.0)
    send_slowly(c, b"</stream:stream>")
    ctx.check(c.wait_closed(timeout=5), "the proxy did not close after both streams ended")
    ctx.check(c.stream_closed, f"the server's </stream:stream> did not come: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    ctx.check(close and close.get("reason") == "client ended the stream" and
              close.get("trailing_bytes") == 0, f"close: {close}")


@case("idle_sm_r_a", prosody="sasl2_smacks")
def idle_sm_r_a(ctx):
    """XEP-0198 with Prosody's mod_smacks: <enable/> -> <enabled/>; after
    idle, <r/> split at every byte -> <a h='0'/>; a message round trip;
    <r/> -> <a h='1'/> (the server counted every stanza: none lost or
    added across the releases)."""
    px = ctx.proxy()
    c, jid, _ = login(ctx, px)
    c.send(f"<enable xmlns='{SM3}'/>")
    el = c.next_element(timeout=5)
    ctx.require(el is not None and raw.local(el.tag) == "enabled",
                f"no <enabled/>: {c.describe(el)}")
    time.sleep(0.2)
    send_slowly(c, f"<r xmlns='{SM3}'/>")
    el = c.next_element(timeout=5)
    ctx.check(el is not None and raw.local(el.tag) == "a" and el.get("h") == "0",
              f"want <a h='0'/>: {c.describe(el)}")
    msg = f"<message to='{jid}' type='chat' id='sm1'><body>counted</body></message>"
    c.send(msg)
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(raw.local(e.tag) == "message" for e in got):
        e = c.next_element(timeout=1)
        if e is not None:
            got.append(e)
            if raw.local(e.tag) == "r":  # the server asks us too: answer
                c.send(f"<a xmlns='{SM3}' h='{sum(1 for g in got if raw.local(g.tag) == 'message')}'/>")
    ctx.check(any(raw.local(e.tag) == "message" for e in got),
              f"the message did not come back: {[raw.local(e.tag) for e in got]}")
    time.sleep(0.2)
    c.send(f"<r xmlns='{SM3}'/>")
    el = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        el = c.next_element(timeout=1)
        if el is not None and raw.local(el.tag) == "a":
            break
    ctx.check(el is not None and raw.local(el.tag) == "a" and el.get("h") == "1",
              f"want <a h='1'/> (the enable's bind excluded, the message counted): "
              f"{c.describe(el)}")
