"""A held session's memory (issue 14 item 2): after login, a leg that moved
no byte for a whole idle sweep (IDLE_SWEEP, 1 s) and is between stanzas
gives back its Expat parser, made again, primed with the stream header's
names, when bytes come (xml.h, xml_release_idle); its empty output queue
goes too, and the SASL decoder's state at login. None of it may change
what the proxy lets through, refuses or logs. These cases cross the
release/recreate boundary on purpose with a real Prosody and raw clients,
each time after the proxy said (its -v log: "idle, parser released") that
it released the parser: a stanza split at every byte and left half-sent
across a sweep (never released mid-stanza), whitespace keepalives with a
CR left alone across a sweep (it may begin a CRLF: not released), a prefix
declared on the stream header and used by a later stanza, an unbound
prefix, an error whose line and column must count from the stream's start,
the stanza limit, the stream's close, and XEP-0198 <r/>/<a/> against
Prosody's mod_smacks.
"""

import re
import shlex
import tempfile
import time
from pathlib import Path

import harness
import raw
from cases import USERS, case

NS_STREAM = raw.NS_STREAM
NS_BIND = raw.NS_BIND
SM3 = "urn:xmpp:sm:3"
# between bytes sent one at a time: each is read and fed alone
GAP = 0.01
# longer than two idle sweeps (IDLE_SWEEP = 1 s): a leg left this long
# without a byte would have been released if it could be (for the checks
# that it was not; a release that should happen is awaited in the log)
TWO_SWEEPS = 2.5
RELEASED = re.compile(r"session (\d+): idle, parser released:((?: client| upstream)+)")


def proxy_v(ctx, **extra):
    """A proxy run with -v (debug lines on stderr) in front of the case's
    Prosody."""
    d = Path(tempfile.mkdtemp(prefix=f"xi-{ctx.case.name}-"))
    wrap = d / "xmpp-inspect-v"
    wrap.write_text(f"#!/bin/sh\nexec {shlex.quote(str(ctx.runner.binary))} -v \"$@\"\n")
    wrap.chmod(0o755)
    return ctx.proxy(binary=str(wrap), **extra)


def releases(px, leg):
    """How many times the proxy said it released leg's parser."""
    try:
        text = Path(px.stderr_path).read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for m in RELEASED.finditer(text) if leg in m.group(2).split())


def await_release(ctx, px, leg, before, what):
    """Waits until the proxy released leg's parser once more than before."""
    ok = harness.wait_until(lambda: releases(px, leg) > before, 10)
    ctx.require(ok, f"{what}: the proxy never released the {leg} leg's parser "
                f"(no 'idle, parser released' line; {releases(px, leg)} so far)")
    return releases(px, leg)


def login(ctx, px, header=None, resource="idle"):
    """A raw PLAIN login (STARTTLS first) whose post-login stream header is
    header (default: raw's), then the client leg's parser released; returns
    (client, bound JID, client releases so far)."""
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
        c.send(header or raw.header())
        c.expect("features")
        c.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>{resource}"
               "</resource></bind></iq>")
        el = c.expect("iq")
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    jid = el.find(f"{raw.q(NS_BIND, 'bind')}/{raw.q(NS_BIND, 'jid')}")
    ctx.require(jid is not None, f"bind failed: {c.describe(el)}")
    n = await_release(ctx, px, "client", 0, "after the bind")
    return c, jid.text, n


def send_slowly(c, data, gap=GAP):
    """data one byte per write (each byte its own TLS record)."""
    if isinstance(data, str):
        data = data.encode()
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(gap)


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
    event has the reason and no trailing bytes; the login succeeded."""
    c.send("</stream:stream>")
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
    """After the client leg's parser was released: a message one byte per
    TLS record, left half-sent for two idle sweeps (a stanza in flight is
    never released: no new release line), then finished: it comes back
    whole. After the next release, another one byte at a time: whole too;
    the session ends cleanly."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    msg = (f"<message to='{jid}' type='chat' id='split'><body>split \u00e9\u20ac at every byte"
           "</body></message>").encode()
    half = msg.index(b"at every")
    send_slowly(c, msg[:half])
    time.sleep(TWO_SWEEPS)
    ctx.check(releases(px, "client") == n,
              "the client leg's parser was released with a stanza half-parsed")
    send_slowly(c, msg[half:])
    el = c.next_element(timeout=10)
    ctx.check(el is not None and raw.local(el.tag) == "message" and
              el.findtext(raw.q(raw.NS_CLIENT, "body")) == "split \u00e9\u20ac at every byte",
              f"the split message did not come back whole: {c.describe(el)}")
    n = await_release(ctx, px, "client", n, "after the split message")
    echo(ctx, c, jid, "x", "split again", send=lambda d: send_slowly(c, d))
    ended_cleanly(ctx, px, c)


@case("idle_whitespace_keepalives")
def idle_whitespace_keepalives(ctx):
    """Whitespace keepalives (RFC 6120 4.6.1) between releases: a space
    (released again after it), a lone CR left for two sweeps (it may begin
    a CRLF, so it waits in Expat: never released on it), its LF (released
    after), then a message round trip; no policy event, a clean end."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    c.send(" ")
    n = await_release(ctx, px, "client", n, "after a space")
    c.send("\r")
    time.sleep(TWO_SWEEPS)
    ctx.check(releases(px, "client") == n, "the parser was released on a lone CR")
    c.send("\n\t ")
    n = await_release(ctx, px, "client", n, "after the CRLF")
    echo(ctx, c, jid, "after keepalives", "keepalive")
    s = ended_cleanly(ctx, px, c)
    ctx.check(not s.all("policy"), f"a policy event for keepalives: {s.all('policy')}")


@case("idle_header_prefix_used_later")
def idle_header_prefix_used_later(ctx):
    """The post-login stream header declares xmlns:cl='jabber:client' and
    xmlns:x='urn:xi:test'; after the release the client sends <cl:message>
    with <cl:body> and an x: child (prefixes only the header binds):
    Prosody takes it and it comes back; after the next release a
    <cl:presence/> byte by byte, then a message."""
    px = proxy_v(ctx)
    hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           f"xmlns:stream='{NS_STREAM}' xmlns:cl='jabber:client' xmlns:x='urn:xi:test' "
           "to='lab.test' version='1.0' xml:lang='en'>")
    c, jid, n = login(ctx, px, header=hdr)
    c.send(f"<cl:message to='{jid}' type='chat' id='p1'><cl:body>prefixed</cl:body>"
           "<x:note/></cl:message>")
    el = c.next_element(timeout=10)
    ctx.check(el is not None and raw.local(el.tag) == "message" and
              el.findtext(raw.q(raw.NS_CLIENT, "body")) == "prefixed",
              f"the prefixed message did not come back: {c.describe(el)}")
    n = await_release(ctx, px, "client", n, "after the prefixed message")
    send_slowly(c, "<cl:presence/>")
    echo(ctx, c, jid, "after", "after prefixed")
    ended_cleanly(ctx, px, c)


@case("idle_unbound_prefix_after_idle")
def idle_unbound_prefix_after_idle(ctx):
    """After the release, a stanza with a prefix the header never declared
    (<zz:message/>): bad-namespace-prefix as without any release; the
    session ends and says why."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    c.send("<zz:message/>")
    ctx.check(c.stream_error() == "bad-namespace-prefix",
              f"want bad-namespace-prefix: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    ctx.check(close and "bad-namespace-prefix" in close.get("reason", ""),
              f"close reason: {close}")


@case("idle_error_position")
def idle_error_position(ctx):
    """Across two releases, a mismatched end tag on the stream's second
    line: the error text gives the line and column counted from the
    stream's start, as a proxy that never releases its parser says."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    c.send("<presence/>\n")
    n = await_release(ctx, px, "client", n, "after the presence")
    lead = "  <message><body>"
    c.send(lead)
    time.sleep(0.1)
    c.send("</message>")
    ctx.check(c.stream_error() == "not-well-formed", f"want not-well-formed: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    # Expat points at the end tag's name, just past its "</": line 2
    # (after the newline), 0-based column len(lead) + 2
    want = f"at line 2 column {len(lead) + 2}"
    ctx.check(close and want in close.get("reason", ""),
              f"close reason should say {want!r}: {close}")


@case("idle_max_stanza_across_idle")
def idle_max_stanza_across_idle(ctx):
    """max_stanza = 4k: after a release, a 3 KB message in 700-byte pieces
    passes; after the next, a 6 KB one sent the same way is refused with
    policy-violation (its size counts from its first byte, which a remade
    parser read)."""
    px = proxy_v(ctx, max_stanza="4k")
    c, jid, n = login(ctx, px)

    def pieces(data):
        for i in range(0, len(data), 700):
            c.send(data[i:i + 700])
            time.sleep(GAP)
    echo(ctx, c, jid, "s" * 3000, "3 KB", send=pieces)
    n = await_release(ctx, px, "client", n, "after the 3 KB message")
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
    """Both legs released, then the client's </stream:stream> one byte at a
    time: relayed, the server's end comes back, the session closes with
    "client ended the stream" and no trailing bytes."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    ctx.require(harness.wait_until(lambda: releases(px, "upstream") > 0, 10),
                "the upstream leg's parser was never released")
    send_slowly(c, "</stream:stream>")
    ctx.check(c.wait_closed(timeout=5), "the proxy did not close after both streams ended")
    ctx.check(c.stream_closed, f"the server's </stream:stream> did not come: {c.describe()}")
    s = ctx.session(px)
    close = s.expect(ctx, "close")
    ctx.check(close and close.get("reason") == "client ended the stream" and
              close.get("trailing_bytes") == 0, f"close: {close}")


@case("idle_sm_r_a", prosody="sasl2_smacks")
def idle_sm_r_a(ctx):
    """XEP-0198 with Prosody's mod_smacks: <enable/> -> <enabled/>; after
    both legs' releases, <r/> split at every byte -> <a h='0'/>; a message
    round trip; after the next release <r/> -> <a h='1'/> (the server
    counted every stanza: none lost or added across the releases)."""
    px = proxy_v(ctx)
    c, jid, n = login(ctx, px)
    c.send(f"<enable xmlns='{SM3}'/>")
    el = c.next_element(timeout=5)
    ctx.require(el is not None and raw.local(el.tag) == "enabled",
                f"no <enabled/>: {c.describe(el)}")
    n = await_release(ctx, px, "client", n, "after enable")
    u = await_release(ctx, px, "upstream", 0, "after enabled")
    send_slowly(c, f"<r xmlns='{SM3}'/>")
    el = c.next_element(timeout=5)
    ctx.check(el is not None and raw.local(el.tag) == "a" and el.get("h") == "0",
              f"want <a h='0'/>: {c.describe(el)}")
    c.send(f"<message to='{jid}' type='chat' id='sm1'><body>counted</body></message>")
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
    n = await_release(ctx, px, "client", n, "after the message")
    c.send(f"<r xmlns='{SM3}'/>")
    el = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        el = c.next_element(timeout=1)
        if el is not None and raw.local(el.tag) == "a":
            break
    ctx.check(el is not None and raw.local(el.tag) == "a" and el.get("h") == "1",
              f"want <a h='1'/> (the message counted): {c.describe(el)}")
