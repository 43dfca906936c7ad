"""Hostile input (issue 5, hardening): clients and servers that misbehave on
purpose, and what the proxy does about it.

Each case says what the offender is told (the RFC 6120 stream error), what
the event log says (a stream_error event with the condition, the close with
its reason), that the proxy survives, and for the important ones that
another session, logged in through the same proxy before the attack, still
carries a message to itself and back afterwards (a "witness").

Misbehaving servers come from fakeserver.py; everything else runs against
the shared Prosody. Cases already in cases.py (a DTD before the stream, a
comment, garbage after the header or instead of TLS, a 100 KB <auth>, the
login timeout after the header) are not repeated here.
"""

import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import cases
import fakeserver
import harness
import raw
from cases import CA, USERS, case

NS_SASL = raw.NS_SASL


# ================================================================ helpers


class Witness:
    """A raw client logged in (PLAIN after STARTTLS, bound) through the proxy
    before an attack; alive() proves its session still carries stanzas."""

    def __init__(self, ctx, px, user="bob"):
        self.ctx = ctx
        self.user = user
        self.c = ctx.raw(px.port)
        try:
            self.jid = raw.login_plain(self.c, user, USERS[user])
        except (AssertionError, OSError) as e:
            ctx.require(False, f"witness {user} could not log in before the attack: {e}")

    def alive(self, what="the attack", timeout=5.0):
        token = f"xi-witness-{time.monotonic_ns()}"
        try:
            self.c.send(f"<message to='{self.jid}' type='chat' id='{token}'>"
                        f"<body>{token}</body></message>")
        except OSError as e:
            return self.ctx.check(False, f"witness session dead after {what}: send failed: {e}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            el = self.c.next_element(timeout=max(0.05, deadline - time.monotonic()))
            if el is None:
                break
            body = el.find(raw.q(raw.NS_CLIENT, "body"))
            if raw.local(el.tag) == "message" and body is not None and body.text == token:
                return True
        return self.ctx.check(False, f"witness session dead after {what}: "
                              f"its message did not come back ({self.c.describe()})")

    def bye(self):
        try:
            self.c.send("</stream:stream>")
        except OSError:
            pass


def send_quietly(c, data):
    """Sends; the proxy may close while a large payload is still going out."""
    try:
        c.send(data)
        return True
    except OSError:
        return False


def prelogin(ctx, px, tls=True, port=None):
    """A raw client with its stream open (after STARTTLS when tls)."""
    c = ctx.raw(port or px.port)
    c.open_stream()
    if tls:
        c.starttls()
        c.open_stream()
    return c


def told(ctx, c, want, timeout=5.0):
    """The client got stream error want, and then the connection closed."""
    cond = c.stream_error(timeout=timeout)
    ctx.check(cond == want, f"offender told {cond!r}, want {want!r}; got {c.describe()}")
    ctx.check(c.eof or c.wait_closed(5), "offender's connection not closed")
    return cond


def logged(ctx, px, index, want, reason_has=None):
    """Session index (connect order) logged a stream_error the proxy sent
    with condition want, then its close (with reason_has in the reason)."""
    s = ctx.session(px, index)
    s.expect(ctx, "stream_error", dir="s2c", condition=want, by="proxy")
    close = s.expect(ctx, "close")
    if close and reason_has:
        ctx.check(reason_has in str(close.get("reason")),
                  f"close reason {close.get('reason')!r} does not say {reason_has!r}")
    if s.events:
        ctx.check(s.events[-1].get("event") == "close", f"last event not close: {s.names()[-3:]}")
    return s


def survives(ctx, px, witness=None, what="the attack"):
    ctx.check(px.alive(), f"proxy died after {what}")
    if witness is not None:
        witness.alive(what)


def rss_kib(pid):
    """VmRSS of the proxy: of pid and its workers, summed."""
    total = None
    for p in harness.proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total = (total or 0) + int(line.split()[1])
        except OSError:
            pass
    return total


def fd_count(pid):
    """Open descriptors of pid and its workers."""
    try:
        return sum(len(os.listdir(f"/proc/{p}/fd")) for p in harness.proc_tree(pid))
    except OSError:
        return None


def proxy_socket_queues(pid, remote_port):
    """(rx_queue, tx_queue) of each TCP socket of pid (and its workers)
    connected to remote_port, from /proc/net/tcp."""
    inodes = set()
    for p in harness.proc_tree(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    target = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                tx, rx = (int(x, 16) for x in fields[4].split(":"))
                out.append((rx, tx))
    return out


def fake_upstream(ctx, script, cert="server"):
    """A fake server for this case (stopped at teardown by the case)."""
    srv = fakeserver.FakeServer(script, cert=cert).start()
    ctx.note_fake = getattr(ctx, "note_fake", [])
    ctx.note_fake.append(srv)
    return srv


def fake_diagnostics(ctx):
    for srv in getattr(ctx, "note_fake", []):
        ctx.note(srv.describe())
        srv.stop()


def with_fake(fn):
    """Stops the case's fake servers and adds what they saw to the
    diagnostics, however the case ends."""
    def wrapper(ctx):
        try:
            fn(ctx)
        finally:
            fake_diagnostics(ctx)
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


# ================================================================ XML the proxy refuses


@case("hostile_pi_in_stream")
def hostile_pi_in_stream(ctx):
    """A processing instruction inside the stream (and a misplaced XML
    declaration): restricted-xml, logged, closed; a witness survives."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    c = prelogin(ctx, px)
    send_quietly(c, "<?evil payload='1'?>")
    told(ctx, c, "restricted-xml")
    logged(ctx, px, 1, "restricted-xml", "restricted-xml")
    c = prelogin(ctx, px, tls=False)
    send_quietly(c, "<?xml version='1.0'?>")
    told(ctx, c, "restricted-xml")
    logged(ctx, px, 2, "restricted-xml")
    survives(ctx, px, w)


@case("hostile_dtd_in_stream")
def hostile_dtd_in_stream(ctx):
    """A DOCTYPE and an ENTITY declaration inside the stream, after TLS:
    restricted-xml (not merely not-well-formed), logged, closed."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    for i, decl in enumerate(("<!DOCTYPE x [<!ENTITY a 'b'>]>", "<!ENTITY lol 'lol'>"), 1):
        c = prelogin(ctx, px)
        send_quietly(c, decl)
        told(ctx, c, "restricted-xml")
        logged(ctx, px, i, "restricted-xml", "restricted-xml")
    survives(ctx, px, w)


@case("hostile_invalid_utf8_and_nul")
def hostile_invalid_utf8_and_nul(ctx):
    """An overlong UTF-8 NUL (C0 80), a raw NUL byte, and an undefined
    entity inside a stanza: not-well-formed each time."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    payloads = (b"<iq type='get' id='u'><query>\xc0\x80</query></iq>",
                b"<iq type='get' id='n'><query>a\x00b</query></iq>",
                b"<iq type='get' id='e'><query>&evil;</query></iq>")
    for i, payload in enumerate(payloads, 1):
        c = prelogin(ctx, px)
        send_quietly(c, payload)
        told(ctx, c, "not-well-formed")
        logged(ctx, px, i, "not-well-formed", "not-well-formed")
    survives(ctx, px, w)


@case("hostile_wrong_stream_namespace")
def hostile_wrong_stream_namespace(ctx):
    """<stream:stream> bound to another namespace, and a stream element with
    no streams namespace at all: invalid-namespace, before any upstream
    stream is opened."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    headers = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://example.com/not-streams' to='lab.test' version='1.0'>",
               "<?xml version='1.0'?><stream xmlns='jabber:client' to='lab.test' version='1.0'>")
    for i, hdr in enumerate(headers, 1):
        c = ctx.raw(px.port)
        send_quietly(c, hdr)
        told(ctx, c, "invalid-namespace")
        s = logged(ctx, px, i, "invalid-namespace", "invalid-namespace")
        ctx.check(not s.all("auth"), "auth event on a bad header")
    survives(ctx, px, w)


@case("hostile_wrong_content_namespace")
def hostile_wrong_content_namespace(ctx):
    """A stream whose default (content) namespace is neither jabber:client
    nor jabber:server: RFC 6120 4.9.3.10 says invalid-namespace."""
    px = ctx.proxy()
    c = ctx.raw(px.port)
    send_quietly(c, "<?xml version='1.0'?><stream:stream xmlns='urn:example:bogus' "
                    f"xmlns:stream='{raw.NS_STREAM}' to='lab.test' version='1.0'>")
    told(ctx, c, "invalid-namespace")
    logged(ctx, px, 0, "invalid-namespace")
    ctx.check(px.alive(), "proxy died")


@case("hostile_unbound_prefix")
def hostile_unbound_prefix(ctx):
    """An unbound prefix: <foo:stream> with no xmlns:foo, and later a
    <foo:message> inside a good stream: bad-namespace-prefix."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    send_quietly(c, "<?xml version='1.0'?><foo:stream xmlns='jabber:client' "
                    "to='lab.test' version='1.0'>")
    told(ctx, c, "bad-namespace-prefix")
    logged(ctx, px, 1, "bad-namespace-prefix", "bad-namespace-prefix")
    c = prelogin(ctx, px)
    send_quietly(c, "<foo:message to='lab.test'><body>x</body></foo:message>")
    told(ctx, c, "bad-namespace-prefix")
    logged(ctx, px, 2, "bad-namespace-prefix")
    survives(ctx, px, w)


@case("hostile_stream_header_too_large")
def hostile_stream_header_too_large(ctx):
    """A stream header with 6 KB of attributes (MAX_STREAM_HEADER is 4 KiB),
    and one that never ends: policy-violation."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    attrs = "".join(f" a{i}='{'v' * 100}'" for i in range(60))
    c = ctx.raw(px.port)
    send_quietly(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    f"xmlns:stream='{raw.NS_STREAM}' to='lab.test' version='1.0'{attrs}>")
    told(ctx, c, "policy-violation")
    logged(ctx, px, 1, "policy-violation")
    c = ctx.raw(px.port)
    send_quietly(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='"
                 + "x" * 20000)
    told(ctx, c, "policy-violation")
    logged(ctx, px, 2, "policy-violation")
    survives(ctx, px, w)


# ================================================================ limits


@case("hostile_prelogin_limit_4k")
def hostile_prelogin_limit_4k(ctx):
    """max_stanza_prelogin = 4k: a 6 KB <auth> and a 6 KB <iq> are refused
    with policy-violation and never reach the server."""
    px = ctx.proxy(max_stanza_prelogin="4k")
    w = Witness(ctx, px)
    payloads = (f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>" + "QUFB" * 1500 + "</auth>",
                "<iq type='get' id='big'><query xmlns='jabber:iq:version'>"
                + "x" * 6000 + "</query></iq>")
    for i, payload in enumerate(payloads, 1):
        c = prelogin(ctx, px)
        send_quietly(c, payload)
        told(ctx, c, "policy-violation")
        s = logged(ctx, px, i, "policy-violation", "policy-violation")
        ctx.check(not s.all("auth"), f"oversized element reached the SASL layer: {s.all('auth')}")
    # Just under the limit is fine: a PLAIN login with the real payload.
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"a normal login under a 4k limit failed: {r.get('error')}")
    survives(ctx, px, w)


@case("hostile_depth_and_attributes")
def hostile_depth_and_attributes(ctx):
    """Elements nested 100 deep (MAX_XML_DEPTH 64), an element with 100
    attributes (MAX_XML_ATTRS 64), an attribute value of 9 KB
    (MAX_XML_ATTR_LEN 8 KiB): policy-violation each, whether the offending
    element is written <x ...></x> or empty <x .../> (Expat still calls the
    end handler of an empty element stopped in its start handler)."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    many = "".join(f" x{i}='1'" for i in range(100))
    long_ = " id='" + "v" * 9000 + "'"
    payloads = ("<iq type='get' id='d'>" + "<a>" * 100 + "</a>" * 100 + "</iq>",
                f"<iq type='get'{many}></iq>",
                f"<iq type='get'{long_}></iq>",
                f"<iq type='get'{many}/>",
                f"<iq type='get'{long_}/>")
    for i, payload in enumerate(payloads, 1):
        c = prelogin(ctx, px)
        send_quietly(c, payload)
        what = payload[:40] + "..."
        cond = c.stream_error(timeout=5)
        ctx.check(cond == "policy-violation", f"{what}: told {cond!r}; got {c.describe()}")
        ctx.check(c.eof or c.wait_closed(5), f"{what}: connection not closed")
        s = ctx.session(px, i)
        s.expect(ctx, "stream_error", dir="s2c", condition="policy-violation", by="proxy")
        close = s.first("close")
        ctx.check(close and "policy-violation" in str(close.get("reason")),
                  f"{what}: close reason {close and close.get('reason')!r}")
        ctx.check(s.events and s.events[-1].get("event") == "close",
                  f"{what}: last event not close: {s.names()[-3:]}")
    # The same limits hold after login, when the bytes are relayed.
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    send_quietly(c, f"<message to='{jid}'>" + "<a>" * 100 + "</a>" * 100 + "</message>")
    told(ctx, c, "policy-violation")
    logged(ctx, px, len(payloads) + 1, "policy-violation")
    survives(ctx, px, w)


@case("hostile_postlogin_oversized")
def hostile_postlogin_oversized(ctx):
    """max_stanza = 16k: a logged-in client sends a 40 KB message. It is told
    policy-violation, the session closes on both legs (Prosody sees its
    client go), and the witness carries on."""
    px = ctx.proxy(max_stanza="16k")
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    # Under the limit it goes through.
    c.send(f"<message to='{jid}' type='chat' id='small'><body>{'s' * 8000}</body></message>")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "message",
              f"an 8 KB message under a 16k limit did not come back: {c.describe(el)}")
    up_before = len(proxy_socket_queues(px.proc.pid, ctx.prosody().port))
    send_quietly(c, f"<message to='{jid}' type='chat' id='big'><body>{'b' * 40000}</body></message>")
    told(ctx, c, "policy-violation")
    s = logged(ctx, px, 1, "policy-violation", "policy-violation")
    s.expect(ctx, "login", outcome="success")
    # The upstream leg went with it: one connection to Prosody fewer.
    gone = harness.wait_until(
        lambda: len(proxy_socket_queues(px.proc.pid, ctx.prosody().port)) == up_before - 1, 5)
    ctx.check(gone, "the proxy's connection to Prosody for the closed session is still open: "
              f"{proxy_socket_queues(px.proc.pid, ctx.prosody().port)}")
    survives(ctx, px, w)


@case("hostile_sasl_step_flood")
def hostile_sasl_step_flood(ctx):
    """After a SCRAM <auth>, 2000 <response>s at once: the exchange is cut at
    MAX_SASL_STEPS (16) with policy-violation; no more than 16 steps are
    logged."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    c = prelogin(ctx, px)
    c.auth("SCRAM-SHA-1", base64.b64encode(b"n,,n=alice,r=0123456789abcdef").decode())
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "challenge",
                f"no SCRAM challenge: {c.describe(el)}")
    send_quietly(c, f"<response xmlns='{NS_SASL}'>AAAA</response>" * 2000)
    told(ctx, c, "policy-violation")
    s = logged(ctx, px, 1, "policy-violation")
    steps = s.all("sasl_step", dir="c2s")
    ctx.check(len(steps) <= 16, f"{len(steps)} c2s sasl_step events, want at most 16")
    survives(ctx, px, w)


@case("hostile_sasl_huge_payload")
def hostile_sasl_huge_payload(ctx):
    """A 60 KB base64 payload (under the 64k pre-login element limit, over
    MAX_SASL_PAYLOAD 48 KiB): in <auth> refused with malformed-request by the
    proxy (the server never sees it), in a <response> policy-violation."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    big = "QUFB" * 15000
    c = prelogin(ctx, px)
    c.auth("PLAIN", big)
    el = c.next_element(timeout=10)
    ctx.check(el is not None and raw.local(el.tag) == "failure"
              and raw.sasl_condition(el) == "malformed-request",
              f"want <failure><malformed-request/>, got {c.describe(el)}")
    c.close()
    s = ctx.session(px, 1)
    s.expect(ctx, "auth_result", outcome="failure", by="proxy", condition="malformed-request")
    c = prelogin(ctx, px)
    c.auth("SCRAM-SHA-1", base64.b64encode(b"n,,n=alice,r=0123456789abcdef").decode())
    el = c.next_element()
    ctx.require(el is not None and raw.local(el.tag) == "challenge",
                f"no SCRAM challenge: {c.describe(el)}")
    send_quietly(c, f"<response xmlns='{NS_SASL}'>{big}</response>")
    told(ctx, c, "policy-violation")
    logged(ctx, px, 2, "policy-violation")
    survives(ctx, px, w)


@case("hostile_auth_attempts")
def hostile_auth_attempts(ctx):
    """Thirty <auth> attempts on one stream with a refused mechanism: cut
    after MAX_AUTH_ATTEMPTS (8) with policy-violation."""
    px = ctx.proxy(mechanisms_deny="PLAIN")
    c = prelogin(ctx, px)
    send_quietly(c, f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGEAYg==</auth>" * 30)
    told(ctx, c, "policy-violation")
    s = logged(ctx, px, 0, "policy-violation")
    refusals = s.all("auth_result", outcome="failure")
    ctx.check(len(refusals) <= 8, f"{len(refusals)} auth_result failures, want at most 8")


# ================================================================ slow and silent clients


def dribble(c, data, interval, until):
    """Sends data one byte every interval seconds until until() is true or
    the data is all sent; returns the time of the last byte."""
    for i in range(len(data)):
        if until():
            break
        if not send_quietly(c, data[i:i + 1]):
            break
        c._read(time.monotonic() + interval)  # listen while waiting
    return time.monotonic()


@case("hostile_slowloris")
def hostile_slowloris(ctx):
    """login_timeout = 2: a client that sends its stream header one byte per
    0.3 s is cut off with connection-timeout at about 2 s, not when (if
    ever) its header is complete."""
    px = ctx.proxy(login_timeout="2")
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    t0 = time.monotonic()
    dribble(c, raw.header().encode(), 0.3,
            lambda: c.eof or c.stream_error(timeout=0) is not None or time.monotonic() - t0 > 8)
    cond = c.stream_error(timeout=max(0.1, t0 + 8 - time.monotonic()))
    took = time.monotonic() - t0
    ctx.check(cond == "connection-timeout", f"slowloris told {cond!r} after {took:.1f}s, "
              f"want connection-timeout at ~2s; got {c.describe()}")
    ctx.check(cond is None or took < 4.0, f"connection-timeout came after {took:.1f}s, want ~2s")
    ctx.check(c.eof or c.wait_closed(3), f"slowloris still connected after {time.monotonic() - t0:.1f}s")
    if cond is not None:
        logged(ctx, px, 1, "connection-timeout", "login timeout")
    survives(ctx, px, w)


@case("hostile_slowloris_after_header")
def hostile_slowloris_after_header(ctx):
    """login_timeout = 2: a client with a complete header that dribbles
    <starttls/> one byte per 0.3 s gets connection-timeout at ~2 s."""
    px = ctx.proxy(login_timeout="2")
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    t0 = time.monotonic()
    c.open_stream()
    dribble(c, f"<starttls xmlns='{raw.NS_TLS}'/>".encode() * 3, 0.3,
            lambda: c.eof or c.stream_error(timeout=0) is not None or time.monotonic() - t0 > 8)
    cond = c.stream_error(timeout=max(0.1, t0 + 8 - time.monotonic()))
    took = time.monotonic() - t0
    ctx.check(cond == "connection-timeout", f"told {cond!r} after {took:.1f}s; {c.describe()}")
    ctx.check(took < 4.0, f"connection-timeout after {took:.1f}s, want ~2s")
    ctx.check(c.eof or c.wait_closed(3), "still connected")
    logged(ctx, px, 1, "connection-timeout", "login timeout")
    survives(ctx, px, w)


@case("hostile_silent_client")
def hostile_silent_client(ctx):
    """login_timeout = 2: clients that connect and never send a byte, on the
    STARTTLS port and on the Direct TLS port (no ClientHello), are closed
    by the login timeout and logged; they must not hold a session forever."""
    px = ctx.proxy(login_timeout="2")
    w = Witness(ctx, px)
    t0 = time.monotonic()
    plain = socket.create_connection(("127.0.0.1", px.port))
    direct = socket.create_connection(("127.0.0.1", px.tls_port))
    try:
        for name, sock in (("STARTTLS port", plain), ("Direct TLS port", direct)):
            sock.settimeout(max(0.1, t0 + 6 - time.monotonic()))
            got = b""
            try:
                while True:
                    d = sock.recv(4096)
                    if not d:
                        break
                    got += d
            except socket.timeout:
                ctx.check(False, f"{name}: a silent client still connected after "
                          f"{time.monotonic() - t0:.1f}s (login_timeout 2)")
                continue
            except OSError:
                pass
            took = time.monotonic() - t0
            ctx.check(took < 4.5, f"{name}: closed after {took:.1f}s, want ~2s")
            if got:
                ctx.check(b"connection-timeout" in got, f"{name}: sent {got[-200:]!r} before closing")
    finally:
        plain.close()
        direct.close()
    for i in (1, 2):
        s = ctx.session(px, i, timeout=2)
        close = s.first("close")
        ctx.check(close is not None and "timeout" in str(close.get("reason")),
                  f"silent session #{i}: close {close}")
    survives(ctx, px, w)


@case("hostile_sigterm_silent_clients")
def hostile_sigterm_silent_clients(ctx):
    """SIGTERM while one client has said nothing and another is half-way
    through its stream header: the proxy still stops promptly (not after
    its 6 s stop timer) and logs both sessions' close."""
    px = ctx.proxy()
    silent = socket.create_connection(("127.0.0.1", px.port))
    partial = socket.create_connection(("127.0.0.1", px.port))
    try:
        partial.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:cli")
        ctx.require(harness.wait_until(lambda: len(px.events.find("upstream")) >= 2, 5),
                    "the two sessions did not start")
        t0 = time.monotonic()
        status = px.stop(timeout=15)
        took = time.monotonic() - t0
        ctx.check(status == 0, f"exit status {status}")
        ctx.check(took < 3.0, f"stopping took {took:.1f}s with two silent clients")
        closes = px.events.find("close")
        ctx.check(len(closes) == 2, f"{len(closes)} close events for 2 sessions: {closes}")
    finally:
        silent.close()
        partial.close()


@case("hostile_starttls_injection")
def hostile_starttls_injection(ctx):
    """STARTTLS command injection from the client: <starttls/> and a PLAIN
    <auth> in one plaintext write. The <auth> must not be taken as if it
    came through TLS: no auth event, the session closes."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    c.open_stream()
    send_quietly(c, f"<starttls xmlns='{raw.NS_TLS}'/>"
                    f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                    + raw.plain_payload("alice", USERS["alice"]) + "</auth>")
    ctx.check(c.wait_closed(5), "connection not closed after the injection")
    s = ctx.session(px, 1)
    ctx.check(not s.all("auth"), f"the injected <auth> was processed: {s.all('auth')}")
    ctx.check(not s.all("tls", ok=True, leg="client"), "a client TLS session was set up anyway")
    close = s.expect(ctx, "close")
    if close:
        ctx.check("before the TLS handshake" in str(close.get("reason")),
                  f"close reason {close.get('reason')!r}")
    survives(ctx, px, w)


# ================================================================ TLS


def old_tls_context():
    """A client context that offers only TLS 1.0/1.1, or (None, why) if the
    local OpenSSL cannot even produce such a ClientHello."""
    try:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = ssl.TLSVersion.TLSv1_1
        c.set_ciphers("DEFAULT:@SECLEVEL=0")
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = c.wrap_bio(inc, out, server_hostname="lab.test")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        if len(hello) < 11 or hello[0] != 0x16:
            return None, "no ClientHello produced"
        if hello[9:11] not in (b"\x03\x01", b"\x03\x02"):
            return None, f"ClientHello version {hello[9:11].hex()} is not TLS 1.0/1.1"
        return c, None
    except (ValueError, ssl.SSLError, AttributeError) as e:
        return None, f"local OpenSSL cannot offer TLS 1.0/1.1: {e}"


def client_hello(sni="lab.test"):
    """The bytes of a real, modern ClientHello (and the object that made it)."""
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = c.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


@case("hostile_old_tls_client")
def hostile_old_tls_client(ctx):
    """A client that offers only TLS 1.0/1.1, after STARTTLS and on the Direct
    TLS port: the handshake fails, a tls event (leg client, ok false, a
    reason) and the close are logged, and the witness carries on."""
    old, why = old_tls_context()
    if old is None:
        ctx.skip(why)
    px = ctx.proxy()
    w = Witness(ctx, px)
    c = ctx.raw(px.port)
    c.open_stream()
    c.send(f"<starttls xmlns='{raw.NS_TLS}'/>")
    c.expect("proceed")
    try:
        c.sock.settimeout(5)
        tls = old.wrap_socket(c.sock, server_hostname="lab.test")
        ctx.check(False, f"a TLS 1.0/1.1 handshake succeeded ({tls.version()})")
        tls.close()
    except (ssl.SSLError, OSError):
        pass
    try:
        s2 = socket.create_connection(("127.0.0.1", px.tls_port), timeout=5)
        tls = old.wrap_socket(s2, server_hostname="lab.test")
        ctx.check(False, f"a TLS 1.0/1.1 Direct TLS handshake succeeded ({tls.version()})")
        tls.close()
    except (ssl.SSLError, OSError):
        pass
    for i in (1, 2):
        s = ctx.session(px, i)
        bad = s.expect(ctx, "tls", leg="client", ok=False)
        if bad:
            ctx.check(bad.get("error"), f"tls event without a reason: {bad}")
        close = s.expect(ctx, "close")
        if close:
            ctx.check("TLS" in str(close.get("reason")), f"close reason {close.get('reason')!r}")
        ctx.check(not s.all("auth"), "auth after a failed handshake")
    survives(ctx, px, w)


@case("hostile_tls_alert_mid_handshake")
def hostile_tls_alert_mid_handshake(ctx):
    """After <proceed/>: a real ClientHello then a fatal alert record; a
    ClientHello then a TCP close; half a ClientHello then a close. Each is
    closed cleanly and logged (tls ok false with a reason, then close)."""
    px = ctx.proxy()
    w = Witness(ctx, px)
    hello = client_hello()
    ctx.require(len(hello) > 50, "could not make a ClientHello")
    alert = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])  # fatal handshake_failure
    for i, how in enumerate(("alert", "close", "half"), 1):
        c = ctx.raw(px.port)
        c.open_stream()
        c.send(f"<starttls xmlns='{raw.NS_TLS}'/>")
        c.expect("proceed")
        sock = c.sock
        if how == "half":
            sock.sendall(hello[:len(hello) // 2])
        else:
            sock.sendall(hello)
            # wait for the server's first flight, so the alert lands mid-handshake
            sock.settimeout(5)
            try:
                sock.recv(65536)
            except OSError:
                pass
        if how == "alert":
            try:
                sock.sendall(alert)
            except OSError:
                pass
            sock.settimeout(5)
            try:
                while sock.recv(65536):
                    pass
                closed = True
            except socket.timeout:
                closed = False
            except OSError:
                closed = True
            ctx.check(closed, "connection not closed after the client's alert")
        c.close()
        s = ctx.session(px, i)
        bad = s.expect(ctx, "tls", leg="client", ok=False)
        if bad:
            error = str(bad.get("error") or "")
            ctx.check(error, f"{how}: tls event without a reason: {bad}")
            if how == "alert":
                ctx.check("alert" in error, f"{how}: the reason does not name the alert: {error!r}")
            else:
                ctx.check("unknown" not in error,
                          f"{how}: a client that closed mid-handshake is logged as {error!r}")
        s.expect(ctx, "close")
    survives(ctx, px, w)


# ================================================================ misbehaving upstreams


@case("hostile_fake_upstream_baseline", prosody=None)
@with_fake
def hostile_fake_upstream_baseline(ctx):
    """The fake server itself: a full PLAIN login and a message echo through
    the proxy (if this fails, the other fake-upstream cases mean nothing)."""
    srv = fake_upstream(ctx, fakeserver.good)
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    w.alive("nothing at all")
    w.bye()
    s = ctx.session(px, 0)
    s.expect(ctx, "tls", leg="upstream", ok=True, verified=True)
    s.expect(ctx, "auth_result", outcome="success", by="upstream")
    s.expect(ctx, "bind", ok=True)


@case("hostile_upstream_silent", prosody=None)
@with_fake
def hostile_upstream_silent(ctx):
    """connect_timeout = 2 and an upstream that accepts TCP and says nothing:
    the client gets remote-connection-failed after ~2 s, logged."""
    srv = fake_upstream(ctx, fakeserver.silent)
    px = ctx.proxy(upstream_port=srv.port, connect_timeout="2")
    c = ctx.raw(px.port)
    t0 = time.monotonic()
    c.send(raw.header())
    cond = c.stream_error(timeout=8)
    took = time.monotonic() - t0
    ctx.check(cond == "remote-connection-failed", f"client told {cond!r}; {c.describe()}")
    ctx.check(1.5 < took < 4.5, f"remote-connection-failed after {took:.1f}s, want ~2s")
    ctx.check(c.eof or c.wait_closed(5), "client connection not closed")
    s = logged(ctx, px, 0, "remote-connection-failed", "timed out")
    conn = srv.wait_conn(0)
    ctx.check(conn is not None and harness.wait_until(lambda: conn.eof, 5),
              "the silent upstream's connection was not closed by the proxy")
    ctx.check(not s.all("auth"), "auth event without an upstream")


@case("hostile_upstream_reset_mid_sasl", prosody=None)
@with_fake
def hostile_upstream_reset_mid_sasl(ctx):
    """The upstream resets the TCP connection when <auth> arrives: the client
    gets remote-connection-failed, the close is logged; the witness (logged
    in through the same proxy and fake server) carries on."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.reset_after_auth])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = prelogin(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    told(ctx, c, "remote-connection-failed")
    s = logged(ctx, px, 1, "remote-connection-failed", "upstream")
    s.expect(ctx, "auth", mechanism="PLAIN")
    login = s.expect(ctx, "login")
    if login:
        ctx.check(login.get("outcome") != "success", f"login says success: {login}")
    survives(ctx, px, w)


@case("hostile_upstream_stream_error", prosody=None)
@with_fake
def hostile_upstream_stream_error(ctx):
    """The upstream sends <system-shutdown/> after <auth>, and another sends
    <host-unknown/> before its features: the client hears the server's own
    condition each time, logged as dir s2c."""
    srv = fake_upstream(ctx, [fakeserver.good,
                              fakeserver.stream_error_after_auth("system-shutdown"),
                              fakeserver.stream_error_at_start("host-unknown")])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = prelogin(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    told(ctx, c, "system-shutdown")
    s = ctx.session(px, 1)
    s.expect(ctx, "stream_error", dir="s2c", condition="system-shutdown")
    s.expect(ctx, "close")
    c = ctx.raw(px.port)
    c.send(raw.header())
    told(ctx, c, "host-unknown")
    s = ctx.session(px, 2)
    s.expect(ctx, "stream_error", dir="s2c", condition="host-unknown")
    s.expect(ctx, "close")
    survives(ctx, px, w)


@case("hostile_upstream_not_well_formed", prosody=None)
@with_fake
def hostile_upstream_not_well_formed(ctx):
    """The upstream answers <auth> with bytes that are not XML: the client
    gets remote-connection-failed, the server is told not-well-formed."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.garbage_after_auth])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = prelogin(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    told(ctx, c, "remote-connection-failed")
    s = ctx.session(px, 1)
    s.expect(ctx, "stream_error", dir="c2s", condition="not-well-formed", by="proxy")
    s.expect(ctx, "stream_error", dir="s2c", condition="remote-connection-failed", by="proxy")
    close = s.expect(ctx, "close")
    if close:
        ctx.check("not-well-formed" in str(close.get("reason")), f"close reason {close.get('reason')!r}")
    conn = srv.wait_conn(1)
    ctx.check(conn is not None and conn.done.wait(10), "fake upstream still waiting")
    if conn is not None:
        ctx.check(b"not-well-formed" in conn.received,
                  f"the server was not told not-well-formed: {conn.received[-300:]!r}")
    survives(ctx, px, w)


@case("hostile_upstream_wrong_name", prosody=None)
@with_fake
def hostile_upstream_wrong_name(ctx):
    """The upstream's certificate is from the trusted CA but not for the
    client's domain (to='example.org'): refused with remote-connection-failed,
    the upstream tls event says why; no SASL reaches it."""
    srv = fake_upstream(ctx, fakeserver.good)
    px = ctx.proxy(upstream_port=srv.port)
    c = ctx.raw(px.port)
    c.send(raw.header(to="example.org"))
    told(ctx, c, "remote-connection-failed")
    s = ctx.session(px, 0)
    bad = [e for e in s.all("tls", leg="upstream") if e.get("ok") is False or e.get("verified") is False]
    ctx.check(bad, f"no failed upstream tls event: {s.all('tls')}")
    if bad:
        ctx.check(bad[0].get("error") or bad[0].get("verify_error"), f"no reason in {bad[0]}")
    ctx.check(not s.all("auth"), "auth relayed to a server with the wrong name")


@case("hostile_upstream_untrusted_fake", prosody=None)
@with_fake
def hostile_upstream_untrusted_fake(ctx):
    """An upstream with a certificate from an unknown CA (the fake server with
    certs/lab/untrusted): remote-connection-failed before any SASL."""
    srv = fake_upstream(ctx, fakeserver.good, cert="untrusted")
    px = ctx.proxy(upstream_port=srv.port)
    c = ctx.raw(px.port)
    c.send(raw.header())
    told(ctx, c, "remote-connection-failed")
    s = ctx.session(px, 0)
    s.expect(ctx, "tls", leg="upstream", ok=False)
    ctx.check(not s.all("auth"), "auth relayed to an untrusted server")


@case("hostile_upstream_challenge_flood", prosody=None)
@with_fake
def hostile_upstream_challenge_flood(ctx):
    """The upstream answers <auth> with 20000 <challenge>s: the exchange is cut
    at MAX_SASL_STEPS; the client is told the server failed
    (remote-connection-failed: the client broke no policy), the server is
    told policy-violation, at most 16 challenges reach the client."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.challenge_flood])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = prelogin(ctx, px)
    c.auth("SCRAM-SHA-1", base64.b64encode(b"n,,n=alice,r=0123456789abcdef").decode())
    told(ctx, c, "remote-connection-failed", timeout=10)
    challenges = [e for e in c.elements if raw.local(e.tag) == "challenge"]
    ctx.check(len(challenges) <= 16, f"{len(challenges)} challenges reached the client")
    s = ctx.session(px, 1)
    ctx.check(len(s.all("sasl_step", dir="s2c")) <= 16, "more than 16 s2c sasl_step events")
    s.expect(ctx, "close")
    conn = srv.wait_conn(1)
    if conn is not None and conn.done.wait(15):
        ctx.check(b"policy-violation" in conn.received,
                  f"the server was not told policy-violation: {conn.received[-300:]!r}")
    survives(ctx, px, w)


@case("hostile_upstream_endless_features", prosody=None)
@with_fake
def hostile_upstream_endless_features(ctx):
    """The upstream sends a <stream:features> that never ends (1 MiB): cut at
    the pre-login element limit; the server is told policy-violation, the
    client remote-connection-failed."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.endless_features])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = ctx.raw(px.port)
    c.send(raw.header())
    told(ctx, c, "remote-connection-failed", timeout=10)
    s = ctx.session(px, 1)
    s.expect(ctx, "stream_error", dir="c2s", condition="policy-violation", by="proxy")
    s.expect(ctx, "close")
    conn = srv.wait_conn(1)
    if conn is not None and conn.done.wait(15):
        ctx.check(b"policy-violation" in conn.received,
                  f"the server was not told policy-violation: {conn.received[-300:]!r}")
    survives(ctx, px, w)


@case("hostile_upstream_starttls_injection", prosody=None)
@with_fake
def hostile_upstream_starttls_injection(ctx):
    """The upstream sends <proceed/> and, in the same write, plaintext
    features: the injected bytes are refused (remote-connection-failed for
    the client), never taken as the server's post-TLS features."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.proceed_with_injection])
    px = ctx.proxy(upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = ctx.raw(px.port)
    c.send(raw.header())
    told(ctx, c, "remote-connection-failed")
    s = ctx.session(px, 1)
    ctx.check(not s.all("tls", leg="upstream", ok=True), "TLS to the upstream went on after the injection")
    ctx.check(not [f for f in s.all("features") if f.get("offered")],
              f"features offered to the client after the injection: {s.all('features')}")
    close = s.expect(ctx, "close")
    if close:
        ctx.check("before the TLS handshake" in str(close.get("reason")),
                  f"close reason {close.get('reason')!r}")
    survives(ctx, px, w)


@case("hostile_upstream_endless_features_after_login", prosody=None)
@with_fake
def hostile_upstream_endless_features_after_login(ctx):
    """After <success/> the upstream's new features never end (1 MiB): the
    proxy, which holds the new header and features to rewrite them, gives
    up at the pre-login element limit; the client, whose new stream is
    open, hears remote-connection-failed in a well-formed stream. And an
    upstream that sends only the new header and dies: the same."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.endless_features_after_login,
                              fakeserver.close_after_login_header])
    px = start_proxy_env(ctx, ASAN_SMALL_QUARANTINE, upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    before = rss_kib(px.proc.pid)
    c = prelogin(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "success", f"no <success/>: {c.describe(el)}")
    c._reset_parser()
    c.send(raw.header())
    told(ctx, c, "remote-connection-failed", timeout=10)
    s = ctx.session(px, 1)
    s.expect(ctx, "auth_result", outcome="success")
    s.expect(ctx, "close")
    after = rss_kib(px.proc.pid)
    if before and after:
        ctx.check(after - before < 8 * 1024, f"proxy RSS grew {before} -> {after} KiB")
    c = prelogin(ctx, px)
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "success", f"no <success/>: {c.describe(el)}")
    c._reset_parser()
    c.send(raw.header())
    cond = c.stream_error(timeout=10)
    ctx.check(cond == "remote-connection-failed",
              f"server died after its new header: client told {cond!r}; got {c.describe()}")
    ctx.check(c.eof or c.wait_closed(5), "client connection not closed")
    survives(ctx, px, w)


@case("hostile_log_injection")
def hostile_log_injection(ctx):
    """Newlines, quotes, backslashes, U+2028 and JSON look-alikes in the
    stream 'to', the PLAIN authcid and authzid, the bind resource: every
    event log line stays one JSON object (checked for every case), and no
    forged event appears."""
    px = ctx.proxy()
    forged = '"}\n{"ts":"2026-01-01T00:00:00.000Z","sid":99,"event":"forged"}'
    c = prelogin(ctx, px)
    payload = base64.b64encode(("x\u2028\n" + forged + "\0alice\n" + forged + "\0nope").encode()).decode()
    c.auth("PLAIN", payload)
    c.next_element()
    c.close()
    c = ctx.raw(px.port)
    send_quietly(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='"
                 + raw.NS_STREAM + "' to='lab.test&#10;{&quot;event&quot;:&quot;forged&quot;}' version='1.0'>")
    c.stream_error(timeout=5)
    c.close()
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"], bind=False)
        c.send(f"<iq type='set' id='b1'><bind xmlns='{raw.NS_BIND}'><resource>r&#10;"
               "{&quot;event&quot;:&quot;forged&quot;}\\</resource></bind></iq>")
        c.next_element()
    except AssertionError as e:
        ctx.check(False, f"login for the resource test failed: {e}")
    c.close()
    harness.wait_until(lambda: cases.all_closed(px.events.read()), 5)
    events = px.events.read()
    ctx.check(not px.events.bad_lines, f"event log line not JSON: {px.events.bad_lines[:1]}")
    ctx.check(not [e for e in events if e.get("event") == "forged" or e.get("sid") == 99],
              "a forged event made it into the log")
    auth = [e for e in events if e.get("event") == "auth"]
    ctx.check(auth and "\n" in str(auth[0].get("authcid", "")) + str(auth[0].get("authzid", "")),
              f"the authcid/authzid with a newline was not logged as it was: {auth[:1]}")


# ================================================================ resources


class StubbornReader(raw.RawClient):
    """A RawClient whose socket has a tiny receive buffer (set before the
    connect, so the window is small from the start)."""

    def __init__(self, port, rcvbuf=4096, ca=CA):
        self.timeout = 5.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5.0)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ca = ca
        self.sni = "lab.test"
        self.received = b""
        self.eof = False
        self.tls = False
        self._reset_parser()


def start_proxy_env(ctx, env_extra, **keys):
    """ctx.proxy(), started with extra environment (harness.Proxy takes the
    environment from os.environ)."""
    px = ctx.proxy(start=False, **keys)
    saved = {k: os.environ.get(k) for k in env_extra}
    try:
        os.environ.update(env_extra)
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return px


# ASan keeps freed memory in quarantine (256 MiB by default); a small one
# keeps RSS meaningful for the memory-bound cases under the sanitizer build.
ASAN_SMALL_QUARANTINE = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
                                          + ":quarantine_size_mb=4")}


@case("hostile_reader_never_reads")
def hostile_reader_never_reads(ctx):
    """A logged-in client (4 KiB receive buffer) sends itself messages for
    seconds and never reads: the proxy stops reading from the upstream at
    its high mark, its RSS grows by less than 16 MiB, and the witness
    carries on."""
    px = start_proxy_env(ctx, ASAN_SMALL_QUARANTINE)
    w = Witness(ctx, px)
    c = StubbornReader(px.port)
    ctx.raws.append(c)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    pid = px.proc.pid
    before = rss_kib(pid)
    msg = (f"<message to='{jid}' type='chat'><body>{'z' * 8000}</body></message>").encode()
    # Prosody reads whatever it is sent (it buffers toward a slow client
    # itself), so the client's sends need not block: 24 MB is plenty to
    # fill every buffer on the way back many times over.
    sent, t0, blocked = 0, time.monotonic(), False
    c.sock.settimeout(2.0)
    while time.monotonic() - t0 < 15 and sent < 24 * 1024 * 1024:
        try:
            c.sock.sendall(msg * 8)
        except (socket.timeout, ssl.SSLWantWriteError):
            blocked = True
            break
        except OSError as e:
            ctx.check(False, f"connection failed while flooding: {e}")
            break
        sent += len(msg) * 8
    ctx.note(f"flood: sent {sent} bytes in {time.monotonic() - t0:.1f}s, blocked={blocked}")
    ctx.check(sent > 4 * 1024 * 1024, f"only {sent} bytes could be sent")
    time.sleep(1.0)  # let the last buffers settle before measuring
    after = rss_kib(pid)
    ctx.note(f"proxy RSS before {before} KiB, after {after} KiB")
    if before and after:
        ctx.check(after - before < 16 * 1024,
                  f"proxy RSS grew by {(after - before) // 1024} MiB ({before} -> {after} KiB)")
    queues = proxy_socket_queues(pid, ctx.prosody().port)
    ctx.note(f"proxy sockets to Prosody (rx, tx): {queues}")
    ctx.check(any(rx > 64 * 1024 for rx, _ in queues),
              f"no upstream socket with unread data: the proxy did not stop reading ({queues})")
    survives(ctx, px, w, "the flood")
    c.close()


def cpu_seconds(pid):
    """utime + stime of pid and its workers."""
    total = 0.0
    try:
        for p in harness.proc_tree(pid):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return total


@case("hostile_fd_exhaustion")
def hostile_fd_exhaustion(ctx):
    """The proxy's descriptor limit drops to 40 once it runs (prlimit: at
    start it would fit max_sessions to the limit and refuse the crowd at
    accept, which cases_daemon covers) and 60 clients connect at once:
    it does not spin on accept (CPU stays low), the clients it cannot serve
    are closed or told remote-connection-failed, the witness carries on, and
    once the crowd leaves new clients are served again."""
    if shutil.which("prlimit") is None:
        ctx.skip("prlimit (util-linux) not installed")
    px = ctx.proxy()
    w = Witness(ctx, px)
    pid = px.proc.pid
    for p in harness.worker_pids(pid):  # each worker has its own limit
        r = subprocess.run(["prlimit", "--pid", str(p), "--nofile=40:40"], capture_output=True,
                           text=True)
        ctx.require(r.returncode == 0, f"prlimit failed: {r.stderr.strip()}")
    socks = connect_many(px.port, 60)
    try:
        for s in socks:
            try:
                s.sendall(raw.header().encode())
            except OSError:
                pass
        time.sleep(1.0)  # let the crowd settle into whatever it gets
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(pid) or 0) - (cpu0 or 0)
        ctx.check(cpu < 0.5, f"the proxy used {cpu:.2f}s of CPU in {time.monotonic() - t0:.1f}s "
                  "while out of descriptors (spinning?)")
        ctx.check(px.alive(), "proxy died out of descriptors")
        hit = ("out of file descriptors" in px.stderr()
               or px.events.find("upstream", ok=False))
        ctx.check(hit, "the descriptor limit was never reached (no EMFILE in stderr, "
                  "no failed upstream): the case tested nothing")
        survives(ctx, px, w, "running out of descriptors")
    finally:
        for s in socks:
            s.close()
    ctx.check(harness.wait_until(lambda: all_closed_but(px, 1), 10), "sessions not closed after the crowd left")

    def served():
        try:
            with raw.RawClient(px.port, ca=CA) as c:
                c.open_stream()
                return True
        except (OSError, AssertionError):
            return False
    ctx.check(harness.wait_until(served, 10, 0.2), "no client served after the crowd left")
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"a login after the crowd left failed: {r.get('error')}")


@case("hostile_upstream_never_reads", prosody=None)
@with_fake
def hostile_upstream_never_reads(ctx):
    """After login the upstream stops reading while the client sends as fast
    as it can: the proxy stops reading the client at its high mark (the
    client's sends block), its RSS stays bounded, the witness carries on."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.login_then(fakeserver.never_read)])
    px = start_proxy_env(ctx, ASAN_SMALL_QUARANTINE, upstream_port=srv.port)
    w = Witness(ctx, px, "alice")
    c = ctx.raw(px.port)
    try:
        jid = raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    before = rss_kib(px.proc.pid)
    msg = (f"<message to='{jid}' type='chat'><body>{'q' * 8000}</body></message>").encode() * 8
    sent, blocked, t0 = 0, False, time.monotonic()
    c.sock.settimeout(2.0)
    while time.monotonic() - t0 < 15 and sent < 64 * 1024 * 1024:
        try:
            c.sock.sendall(msg)
        except (socket.timeout, ssl.SSLWantWriteError):
            blocked = True
            break
        except OSError as e:
            ctx.check(False, f"connection failed while flooding: {e}")
            break
        sent += len(msg)
    ctx.check(blocked, f"the client's sends never blocked ({sent} bytes): the proxy kept reading")
    ctx.check(sent < 16 * 1024 * 1024, f"{sent} bytes accepted before blocking")
    after = rss_kib(px.proc.pid)
    if before and after:
        ctx.check(after - before < 16 * 1024, f"proxy RSS grew {before} -> {after} KiB")
    ctx.note(f"sent {sent} bytes before blocking; RSS {before} -> {after} KiB")
    survives(ctx, px, w, "the stalled upstream")
    c.close()


@case("hostile_upstream_oversized_after_login", prosody=None)
@with_fake
def hostile_upstream_oversized_after_login(ctx):
    """max_stanza = 16k and the upstream sends a logged-in client a 100 KB
    message: the server is told policy-violation, the client's connection
    closes (it is mid-stanza, so no error can be added), the close says
    why, the witness carries on."""
    srv = fake_upstream(ctx, [fakeserver.good, fakeserver.login_then(fakeserver.big_stanza(100000))])
    px = ctx.proxy(upstream_port=srv.port, max_stanza="16k")
    w = Witness(ctx, px, "alice")
    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"])
    except AssertionError as e:
        ctx.require(False, f"raw login failed: {e}")
    ctx.check(c.wait_closed(10), "client connection not closed")
    s = ctx.session(px, 1)
    s.expect(ctx, "stream_error", dir="c2s", condition="policy-violation", by="proxy")
    close = s.expect(ctx, "close")
    if close:
        ctx.check("policy-violation" in str(close.get("reason")), f"close reason {close.get('reason')!r}")
    conn = srv.wait_conn(1)
    if conn is not None and conn.done.wait(15):
        ctx.check(b"policy-violation" in conn.received,
                  f"the server was not told policy-violation: {conn.received[-300:]!r}")
    ctx.check(len(c.received) < 40000, f"the client got {len(c.received)} bytes of a 16k-limited stream")
    survives(ctx, px, w)


def connect_many(port, n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def closed_at_once(socks, timeout=3.0):
    """The sockets the peer closed within timeout (EOF or reset)."""
    closed = []
    deadline = time.monotonic() + timeout
    for s in socks:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(1) == b"":
                closed.append(s)
        except socket.timeout:
            pass
        except OSError:
            closed.append(s)
    return closed


def many_connections(ctx, rule, limit, n, **keys):
    px = ctx.proxy(**{rule: str(limit)}, **keys)
    w = Witness(ctx, px)
    socks = connect_many(px.port, n)
    try:
        ctx.require(len(socks) == n, f"only {len(socks)}/{n} connections made")
        want_refused = n - (limit - 1)  # the witness holds one
        harness.wait_until(lambda: len(px.events.find("refused")) >= want_refused, 5)
        events = px.events.find("refused")
        ctx.check(len(events) == want_refused,
                  f"{len(events)} refused events, want {want_refused}")
        for ev in events[:1]:
            ctx.check(ev.get("sid") == 0 and ev.get("rule") == rule and ev.get("peer") == "127.0.0.1",
                      f"refused event {ev}")
        closed = closed_at_once(socks, 3.0)
        ctx.check(len(closed) == want_refused,
                  f"{len(closed)} connections closed at once, want {want_refused}")
        connects = [e for e in px.events.find("connect")]
        ctx.check(len(connects) == limit, f"{len(connects)} sessions, want {limit} (witness included)")
    finally:
        for s in socks:
            s.close()
    survives(ctx, px, w, f"{n} connections")
    # Once they are gone, new connections are served again.
    ctx.check(harness.wait_until(lambda: all_closed_but(px, 1), 10), "held sessions not closed")
    c = ctx.raw(px.port)
    try:
        c.open_stream()
    except AssertionError as e:
        ctx.check(False, f"no new session served after the held ones left: {e}")
    return px


def all_closed_but(px, n):
    evs = px.events.read()
    open_ = set(cases.sids(evs)) - {e.get("sid") for e in evs if e.get("event") == "close"}
    return len(open_) <= n


@case("hostile_many_from_one_address")
def hostile_many_from_one_address(ctx):
    """max_per_addr = 20, 50 connections from 127.0.0.1 (one of the 20 is a
    logged-in witness): 31 are closed at once with a refused event (sid 0,
    rule max_per_addr), the rest and the witness are served."""
    many_connections(ctx, "max_per_addr", 20, 50)


@case("hostile_max_sessions")
def hostile_max_sessions(ctx):
    """max_sessions = 10, 30 connections: 21 closed at once with refused
    events (rule max_sessions), the witness unharmed."""
    many_connections(ctx, "max_sessions", 10, 30)
