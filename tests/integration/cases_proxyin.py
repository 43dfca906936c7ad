"""PROXY protocol from a balancer (issue 13, part 1): `listen = ADDR:PORT
proxy` with `proxy_from = CIDR...`. The proxy reads a PROXY v1 or v2 header
first (before the stream, before the ClientHello) from trusted senders
only, and the client's address from it is the session's peer everywhere:
connect (with via = the balancer), login, auth_failures, max_per_addr and
the upstream PROXY header.

The balancer is a real HAProxy from Debian (`server ... send-proxy-v2
source 127.0.0.5`, health checks with check-send-proxy: v2 LOCAL) in front
of both kinds of listener, with slixmpp logging in through it; raw clients
act as a balancer themselves (they connect from 127.0.0.5, in proxy_from)
and send v1, v2 with TLVs, a header in pieces, garbage, a header too long,
a header too slow, or connect from an untrusted address.

  proxyin_haproxy_login     slixmpp through HAProxy (STARTTLS and Direct TLS):
                            connect.peer = the client, via = HAProxy's source
                            address; HAProxy's LOCAL health checks are
                            sessions of the balancer's own address
  proxyin_v1_upstream_chain a v1 header's client (198.51.100.7) is the peer,
                            and our own v2 header toward a second HAProxy
                            (accept-proxy, before Prosody) names it too
  proxyin_v2_tlv_direct_tls v2 with TLVs and an IPv6 client, before the
                            ClientHello of a Direct TLS login
  proxyin_split_header      a v2 header in three writes, then the stream
  proxyin_garbage           no header, HTTP, a bad v1 line, a v2 length past
                            the bound, a line over 107 bytes: closed and
                            refused (rule proxy_header, with the reason)
  proxyin_untrusted         a valid header from 127.0.0.1 (not proxy_from):
                            refused (rule proxy_from); SIGHUP can trust it
  proxyin_slow_header       half a header, or none: closed after
                            PROXY_HEADER_TIMEOUT (rule proxy_timeout), while
                            another client logs in meanwhile
  proxyin_auth_failures     two clients behind one balancer: one locked out
                            by auth_failures, the other still logs in
  proxyin_max_per_addr      max_per_addr counts clients, not the balancer
  proxyin_config_check      -t: a proxy listener without proxy_from
"""

import socket
import struct
import time

import harness
import raw
from cases import USERS, WRONG, case

BALANCER = "127.0.0.5"
PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst, sport, dport, proto="TCP4"):
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, dst, sport, dport, tlvs=b"", cmd=0x21):
    fam = 0x21 if ":" in src else 0x11
    a = socket.AF_INET6 if ":" in src else socket.AF_INET
    body = (socket.inet_pton(a, src) + socket.inet_pton(a, dst) + struct.pack("!HH", sport, dport)
            + tlvs)
    return PP2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


def proxied(ctx, **extra):
    """A proxy whose two listeners take PROXY headers from BALANCER."""
    keys = {"proxy_from": f"{BALANCER}/32"}
    keys.update(extra)
    px = ctx.proxy(start=False, **keys)
    px.keys["listen"] += " proxy"
    px.keys["listen_tls"] += " proxy"
    try:
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")
    return px


def refused(ctx, px, rule, peer, timeout=5.0):
    ev = px.events.wait("refused", timeout, rule=rule, peer=peer)
    ctx.check(ev, f"no refused event rule={rule} peer={peer}: "
              f"{[e for e in px.events.read() if e.get('event') == 'refused']}")
    return ev


def closed_without_data(ctx, c, what, timeout=5.0):
    """The proxy closed c without a byte: no stream exists to carry an error."""
    ok = c.wait_closed(timeout)
    ctx.check(ok or c.eof, f"{what}: the proxy did not close the connection")
    ctx.check(c.received == b"", f"{what}: the proxy sent {c.received[:80]!r} before closing")


def start_haproxy(ctx, px, **kw):
    return ctx.server(lambda: harness.HAProxy(px.port, name=f"haproxy-{ctx.case.name}",
                                              keep=ctx.runner.keep, **kw), "haproxy")


@case("proxyin_haproxy_login")
def proxyin_haproxy_login(ctx):
    """A real HAProxy (send-proxy-v2, source 127.0.0.5) in front of both listeners; slixmpp logs in through each. connect says peer = the client (127.0.0.1:its port), via = 127.0.0.5:HAProxy's port, proxy v2; the login record names the client; HAProxy's health checks (check-send-proxy: v2 LOCAL) are sessions of the balancer's own address with proxy_cmd local."""
    px = proxied(ctx)
    h = start_haproxy(ctx, px, send_proxy="send-proxy-v2", source=BALANCER,
                      backend_tls_port=px.tls_port, check=True)
    try:
        for port, kind, direct in ((h.port, "starttls", False), (h.tls_port, "direct_tls", True)):
            r = ctx.client(port, mech="PLAIN", direct_tls=direct)
            ctx.check(r.get("ok"), f"slixmpp through haproxy ({kind}): {r}")
            logins = harness.wait_until(lambda: px.events.find("login", outcome="success"), 5)
            ctx.require(logins, f"no successful login ({kind})")
        lines = h.lines()
        for kind in ("starttls", "direct_tls"):
            conns = [e for e in px.events.find("connect", port_kind=kind) if "proxy_cmd" not in e]
            if not ctx.check(len(conns) == 1, f"{kind}: client connects: {conns}"):
                continue
            ev = conns[0]
            ctx.check(ev.get("proxy") == "v2", f"{kind}: proxy field {ev.get('proxy')!r}, want v2")
            ctx.check(str(ev.get("via", "")).startswith(BALANCER + ":"),
                      f"{kind}: via {ev.get('via')!r}, want HAProxy's source {BALANCER}")
            peer = ev.get("peer", "")
            ctx.check(peer.startswith("127.0.0.1:") and peer != ev.get("via"),
                      f"{kind}: peer {peer!r}, want the client at 127.0.0.1")
            # HAProxy's own log says which client port it took: the same
            ports = {l.get("cp") for l in lines}
            ctx.check(peer.rsplit(":", 1)[-1] in ports,
                      f"{kind}: peer port not among the clients HAProxy logged {ports}")
            login = px.events.wait("login", sid=ev["sid"])
            ctx.check(login and login.get("peer") == peer,
                      f"{kind}: the login record names {login and login.get('peer')}, want {peer}")
        checks = harness.wait_until(lambda: px.events.find("connect", proxy_cmd="local"), 5)
        ctx.check(checks, "no health check (v2 LOCAL) session from HAProxy")
        for ev in checks or []:
            ctx.check(ev.get("peer", "").startswith(BALANCER + ":") and ev.get("peer") == ev.get("via"),
                      f"a LOCAL header: the peer is the connection's own address: {ev}")
        ctx.check(not px.events.find("refused"), f"refusals: {px.events.find('refused')}")
    finally:
        if ctx.problems:
            ctx.note(f"--- haproxy log:\n{harness.tail(h.log, 3000)}")


@case("proxyin_v1_upstream_chain")
def proxyin_v1_upstream_chain(ctx):
    """A v1 header from the balancer names client 198.51.100.7:40001; the session's peer is that client, and with upstream_proxy_protocol = v2 the header the proxy sends on (read by a second HAProxy, accept-proxy, before Prosody) names 198.51.100.7:40001 too, not the balancer."""
    p = ctx.prosody()
    up = ctx.server(lambda: harness.HAProxy(p.port, name=f"haproxy-up-{ctx.case.name}",
                                            keep=ctx.runner.keep), "haproxy")
    px = proxied(ctx, upstream=f"127.0.0.1:{up.port}", upstream_proxy_protocol="v2")
    c = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.7", "192.0.2.1", 40001, 5222))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="v1chain")
    except AssertionError as e:
        ctx.require(False, f"login after a v1 header: {e}")
    ev = px.events.wait("connect", peer="198.51.100.7:40001")
    ctx.require(ev, f"no connect for the header's client: {px.events.find('connect')}")
    ctx.check(ev.get("via", "").startswith(BALANCER + ":") and ev.get("proxy") == "v1",
              f"connect via/proxy: {ev}")
    ctx.check(px.events.wait("login", peer="198.51.100.7:40001", outcome="success"),
              "no successful login record for 198.51.100.7:40001")
    c.send("</stream:stream>")
    c.wait_closed(3)
    lines = harness.wait_until(lambda: up.lines() or None, 5) or []
    ctx.check(any(l.get("ci") == "198.51.100.7" and l.get("cp") == "40001" for l in lines),
              f"the upstream HAProxy read {[(l.get('ci'), l.get('cp')) for l in lines]}, want "
              "198.51.100.7:40001")
    ctx.check(any(l.get("fi") == "192.0.2.1" and l.get("fp") == "5222" for l in lines),
              f"the upstream header's destination: {[(l.get('fi'), l.get('fp')) for l in lines]}, "
              "want the one the client asked the balancer for (192.0.2.1:5222)")


@case("proxyin_v2_tlv_direct_tls")
def proxyin_v2_tlv_direct_tls(ctx):
    """A v2 header with TLVs (AUTHORITY, UNIQUE_ID, NOOP) and an IPv6 client, then the ClientHello of a Direct TLS login: the peer is [2001:db8::7]:40002."""
    px = proxied(ctx)
    tlvs = tlv(0x02, b"lab.test") + tlv(0x05, b"balancer-id-1") + tlv(0x04, b"\0\0\0")
    c = ctx.raw(px.tls_port, source=BALANCER, direct_tls=True,
                preamble=v2("2001:db8::7", "2001:db8::1", 40002, 5223, tlvs))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="v2tls")
    except AssertionError as e:
        ctx.require(False, f"Direct TLS login after a v2 header: {e}")
    ev = px.events.wait("connect", peer="[2001:db8::7]:40002")
    ctx.require(ev, f"connect: {px.events.find('connect')}")
    ctx.check(ev.get("port_kind") == "direct_tls" and ev.get("proxy") == "v2", f"connect: {ev}")
    ctx.check(px.events.wait("login", peer="[2001:db8::7]:40002", outcome="success"),
              "no successful login for the IPv6 client")


@case("proxyin_split_header")
def proxyin_split_header(ctx):
    """A v2 header written in three pieces (inside the signature, inside the addresses), and a v1 line in two, each then a login: the proxy waits for the rest, and takes none of the client's bytes that follow."""
    px = proxied(ctx)
    h2 = v2("203.0.113.9", "192.0.2.1", 40003, 5222, tlv(0x05, b"x"))
    c = ctx.raw(px.port, source=BALANCER, preamble=h2[:5])
    time.sleep(0.15)
    c.send(h2[5:20])
    time.sleep(0.15)
    c.send(h2[20:])  # the stream header follows in login_plain
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="split2")
    except AssertionError as e:
        ctx.check(False, f"login after a split v2 header: {e}")
    ctx.check(px.events.wait("connect", peer="203.0.113.9:40003"),
              f"split v2: connect {px.events.find('connect')}")
    h1 = v1("203.0.113.10", "192.0.2.1", 40004, 5222)
    c1 = ctx.raw(px.port, source=BALANCER, preamble=h1[:17])
    time.sleep(0.15)
    c1.send(h1[17:] + raw.header().encode())  # the header's end and the stream in one write
    try:
        c1.expect("features")
    except AssertionError as e:
        ctx.check(False, f"split v1: no features after the stream header: {e}")
    ctx.check(px.events.wait("connect", peer="203.0.113.10:40004"),
              f"split v1: connect {px.events.find('connect')}")
    ctx.check(px.events.wait("stream", dir="c2s", to="lab.test"),
              "split v1: the stream header sent with the header's end was lost")


@case("proxyin_garbage")
def proxyin_garbage(ctx):
    """From the trusted balancer, what is not a PROXY header: an XMPP stream with no header, HTTP, a v1 line with a bad address, a v2 header stating 65535 bytes, a v1 line longer than 107 bytes, a TLS ClientHello with no header. Each is closed without a byte (no stream exists to carry an error) and refused (rule proxy_header, detail saying why); a good client is served after them."""
    px = proxied(ctx)
    bad = [
        ("an XMPP stream", raw.header().encode()),
        ("HTTP", b"GET / HTTP/1.0\r\n\r\n"),
        ("v1 bad address", b"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n"),
        ("v2 length 65535", PP2_SIG + b"\x21\x11\xff\xff"),
        ("v1 over 107 bytes", b"PROXY UNKNOWN " + b"x" * 120),
        ("a ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ]
    for what, data in bad:
        before = len(px.events.find("refused", rule="proxy_header"))
        c = ctx.raw(px.port, source=BALANCER, preamble=data)
        closed_without_data(ctx, c, what)
        ok = harness.wait_until(lambda: len(px.events.find("refused", rule="proxy_header")) > before, 5)
        ctx.check(ok, f"{what}: no refused event with rule proxy_header")
        if ok:
            ev = px.events.find("refused", rule="proxy_header")[-1]
            ctx.check(ev.get("peer") == BALANCER and ev.get("detail"),
                      f"{what}: refused event: {ev}")
    ctx.check(not px.events.find("connect"), f"a session started: {px.events.find('connect')}")
    c = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.8", "192.0.2.1", 1, 2))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="after-garbage")
    except AssertionError as e:
        ctx.check(False, f"a good client after the garbage: {e}")


@case("proxyin_untrusted")
def proxyin_untrusted(ctx):
    """A valid v1 header from 127.0.0.1, not in proxy_from (127.0.0.5/32): closed at accept, before a byte is read, refused with rule proxy_from and peer 127.0.0.1, no session. After a SIGHUP that adds 127.0.0.1 to proxy_from, the same client is served."""
    px = proxied(ctx)
    c = ctx.raw(px.port, source="127.0.0.1", preamble=v1("198.51.100.9", "192.0.2.1", 1, 2))
    closed_without_data(ctx, c, "untrusted sender")
    refused(ctx, px, "proxy_from", "127.0.0.1")
    ctx.check(not px.events.find("connect"), "an untrusted sender got a session")
    px.reload(proxy_from=f"{BALANCER}/32, 127.0.0.0/30")
    ctx.require(px.events.wait("reload", detail="ok"), "no reload event")
    c = ctx.raw(px.port, source="127.0.0.1", preamble=v1("198.51.100.9", "192.0.2.1", 1, 2))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="trusted-now")
    except AssertionError as e:
        ctx.check(False, f"after the reload trusted 127.0.0.1: {e}")
    ctx.check(px.events.wait("connect", peer="198.51.100.9:1"), "no session after the reload")


@case("proxyin_slow_header")
def proxyin_slow_header(ctx):
    """Half a v1 header and then nothing, and a connection that sends nothing: both closed after PROXY_HEADER_TIMEOUT (3 s; between 2.5 and 6 s here), refused with rule proxy_timeout; a client that logs in meanwhile is not held up."""
    mport = harness.free_port()
    px = proxied(ctx, metrics_listen=f"127.0.0.1:{mport}")
    t0 = time.monotonic()
    half = ctx.raw(px.port, source=BALANCER, preamble=b"PROXY TCP4 198.51.100.")
    silent = ctx.raw(px.port, source=BALANCER, timeout=8)
    half.timeout = 8
    c = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.11", "192.0.2.1", 1, 2))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="meanwhile")
    except AssertionError as e:
        ctx.check(False, f"a login while two headers are slow: {e}")
    ctx.check(time.monotonic() - t0 < 2.5, "the login waited for the slow headers")
    text = scrape_text(mport)
    ctx.check(b'xmpp_inspect_sessions{state="proxy_header"} 2\n' in text,
              "the sessions gauge does not show the two headers being read: "
              f"{[l for l in text.decode().splitlines() if 'sessions{' in l]}")
    for what, s in (("half a header", half), ("no header", silent)):
        closed_without_data(ctx, s, what, timeout=8)
        dt = time.monotonic() - t0
        ctx.check(2.5 <= dt <= 6.0, f"{what}: closed after {dt:.1f}s, want about 3 s")
    ok = harness.wait_until(lambda: len(px.events.find("refused", rule="proxy_timeout")) >= 2, 3)
    ctx.check(ok, f"refused proxy_timeout events: {px.events.find('refused')}")
    details = sorted(e.get("detail", "") for e in px.events.find("refused", rule="proxy_timeout"))
    ctx.check(details == ["header incomplete", "no header"], f"timeout details: {details}")
    ok = harness.wait_until(lambda: b'xmpp_inspect_refused_total{rule="proxy_timeout"} 2\n' in
                            scrape_text(mport), 3)
    ctx.check(ok, "xmpp_inspect_refused_total does not count the two timeouts")


def scrape_text(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = b""
    while chunk := s.recv(65536):
        text += chunk
    s.close()
    return text


def wrong_login(ctx, px, src, port):
    c = ctx.raw(px.port, source=BALANCER, preamble=v1(src, "192.0.2.1", port, 5222))
    f = c.open_stream()
    if raw.has_starttls(f) != "none":
        c.starttls()
        c.open_stream()
    c.auth("PLAIN", raw.plain_payload("alice", WRONG))
    el = c.next_element(timeout=5)
    c.close()
    return raw.sasl_condition(el) if el is not None else None


@case("proxyin_auth_failures")
def proxyin_auth_failures(ctx):
    """auth_failures = 2/60 behind one balancer: client 198.51.100.20 fails twice (not-authorized from Prosody) and its third attempt is refused by the proxy (temporary-auth-failure, policy auth_failures); client 198.51.100.21, through the same balancer address, then logs in: failures count by the real client address."""
    px = proxied(ctx, auth_failures="2/60")
    got = [wrong_login(ctx, px, "198.51.100.20", 41000 + i) for i in range(3)]
    ctx.check(got[:2] == ["not-authorized", "not-authorized"], f"first two answers: {got}")
    ctx.check(got[2] == "temporary-auth-failure", f"third answer for the same client: {got[2]}")
    pol = px.events.find("policy", rule="auth_failures")
    ctx.check(pol, "no policy auth_failures event")
    c = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.21", "192.0.2.1", 42000, 5222))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="other-client")
    except AssertionError as e:
        ctx.check(False, f"another client behind the same balancer was locked out: {e}")
    ctx.check(px.events.wait("login", peer="198.51.100.21:42000", outcome="success"),
              "no successful login for 198.51.100.21")


@case("proxyin_max_per_addr")
def proxyin_max_per_addr(ctx):
    """max_per_addr = 1: a client (198.51.100.30) holds a session; its second connection through the balancer is refused once its header names it (rule max_per_addr, peer the client, via the balancer); another client (198.51.100.31) is served, though the balancer itself has three connections."""
    px = proxied(ctx, max_per_addr="1")
    a = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.30", "192.0.2.1", 1, 5222))
    a.open_stream()
    ctx.require(px.events.wait("connect", peer="198.51.100.30:1"), "first client: no session")
    b = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.30", "192.0.2.1", 2, 5222))
    closed_without_data(ctx, b, "second connection of one client")
    ev = refused(ctx, px, "max_per_addr", "198.51.100.30")
    ctx.check(ev and str(ev.get("via", "")).startswith(BALANCER + ":"), f"refused: no via: {ev}")
    c = ctx.raw(px.port, source=BALANCER, preamble=v1("198.51.100.31", "192.0.2.1", 3, 5222))
    try:
        raw.login_plain(c, "alice", USERS["alice"], resource="other")
    except AssertionError as e:
        ctx.check(False, f"another client behind the balancer: {e}")


@case("proxyin_config_check", prosody=None)
def proxyin_config_check(ctx):
    """-t: a listener marked proxy with no proxy_from is a configuration error (it could accept no one), named with its key; with proxy_from it is OK; a misspelt flag is an error with file:line."""
    px = ctx.proxy(upstream_port=harness.port_refusing(), start=False)
    px.keys["listen"] += " proxy"
    px.write_config()
    r = ctx.run_bin(["-t", "-c", str(px.config)])
    ctx.check(r.returncode == 1 and "proxy_from: not set" in r.stderr,
              f"-t without proxy_from: {r.returncode} {r.stderr!r}")
    px.keys["proxy_from"] = "10.0.0.0/8, 2001:db8::/32"
    px.write_config()
    r = ctx.run_bin(["-t", "-c", str(px.config)])
    ctx.check(r.returncode == 0, f"-t with proxy_from: {r.returncode} {r.stderr!r}")
    px.keys["listen"] = px.keys["listen"].replace(" proxy", " proxi")
    px.write_config()
    r = ctx.run_bin(["-t", "-c", str(px.config)])
    ctx.check(r.returncode == 1 and "unknown listener flag" in r.stderr and ":2:" in r.stderr,
              f"-t with a misspelt flag: {r.returncode} {r.stderr!r}")


@case("proxyin_sigterm_pending")
def proxyin_sigterm_pending(ctx):
    """SIGTERM while two connections are still reading their header (half a v2 header, nothing): the proxy closes them at once (refused, rule stopping), exits 0 well before the header timeout would have fired, and leaks nothing (under ASan: no report)."""
    px = proxied(ctx)
    a = ctx.raw(px.port, source=BALANCER, preamble=PP2_SIG[:7], timeout=5)
    b = ctx.raw(px.tls_port, source=BALANCER, timeout=5)
    time.sleep(0.3)
    t0 = time.monotonic()
    status = px.stop()
    dt = time.monotonic() - t0
    ctx.check(status == 0, f"exit status {status}")
    ctx.check(dt < 2.5, f"stopped after {dt:.1f}s: it waited for the headers")
    for what, c in (("half a header", a), ("no header", b)):
        closed_without_data(ctx, c, what, timeout=2)
    got = px.events.find("refused", rule="stopping")
    ctx.check(len(got) == 2, f"refused stopping events: {got}")
