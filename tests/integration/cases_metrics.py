"""Metrics (issue 13, part 3): `metrics_listen = ADDR:PORT` serves
GET /metrics in the Prometheus text format 0.0.4 on the proxy's own loop.

Real logins through a real Prosody (slixmpp: PLAIN and SCRAM-SHA-1 that
succeed, a wrong password; a raw client whose PLAIN in the clear policy
rejects), scraped while a session is held open and after; each scrape is
checked by `promtool check metrics` (Debian's prometheus package), and the
counters are compared with what the event log says (logins by outcome and
mechanism, policy actions by rule and action, connections, TLS handshakes).
Then hostile HTTP: a huge request, slowloris, many connections at once,
binary garbage, other methods and paths; the proxy goes on serving XMPP
logins meanwhile and scrapes after.

  metrics_scrape_promtool  the scrapes pass promtool; counters = event log
  metrics_hostile_http     bounded: 431, 400, 404, 405, timeouts, the
                           connection cap; XMPP logins unaffected
"""

import re
import shutil
import socket
import subprocess
import time
from collections import Counter

import harness
import raw
from cases import USERS, WRONG, case

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def http(port, data, timeout=5.0, read=True):
    """Sends data, returns (status line, headers+body bytes) or (None, b"") if closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        if read:
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        s.close()
    status = out.split(b"\r\n", 1)[0].decode(errors="replace") if out else None
    return status, out


def scrape(ctx, port):
    status, out = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n")
    ctx.require(status and status.startswith("HTTP/1.1 200"), f"scrape: {status!r} {out[:200]!r}")
    head, _, body = out.partition(b"\r\n\r\n")
    ctx.check(b"text/plain; version=0.0.4" in head, f"content type: {head!r}")
    m = re.search(rb"Content-Length: (\d+)", head)
    ctx.check(m and int(m.group(1)) == len(body), "Content-Length is not the body's")
    return body.decode()


def promtool(ctx, text, what):
    tool = shutil.which("promtool")
    if tool is None:
        ctx.skip("promtool not installed (Debian package prometheus; tools/deps installs it)")
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    ctx.check(r.returncode == 0, f"promtool check metrics ({what}): {r.returncode} "
              f"{(r.stdout + r.stderr)[:600]}")


def samples(text):
    """{(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"bad line {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def by(sam, name, *keys):
    """Counter of label tuples -> value for metric name."""
    c = Counter()
    for (n, labels), v in sam.items():
        if n == name and v:
            d = dict(labels)
            c[tuple(d.get(k) for k in keys)] += int(v)
    return c


def check_against_log(ctx, px, text):
    sam = samples(text)
    ev = px.events.read()
    mechs = {"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "DIGEST-MD5"}
    want_logins = Counter((e.get("outcome"), e.get("mechanism") if e.get("mechanism") in mechs else
                           ("none" if not e.get("mechanism") else "other"))
                          for e in ev if e.get("event") == "login")
    got_logins = by(sam, "xmpp_inspect_logins_total", "outcome", "mechanism")
    ctx.check(got_logins == want_logins, f"logins: metrics {dict(got_logins)}, event log "
              f"{dict(want_logins)}")
    want_pol = Counter((e.get("rule"), e.get("action")) for e in ev if e.get("event") == "policy")
    got_pol = by(sam, "xmpp_inspect_policy_actions_total", "rule", "action")
    ctx.check(got_pol == want_pol, f"policy: metrics {dict(got_pol)}, event log {dict(want_pol)}")
    conns = sum(1 for e in ev if e.get("event") == "connect")
    ctx.check(sam.get(("xmpp_inspect_connections_total", frozenset())) == conns,
              f"connections: metrics {sam.get(('xmpp_inspect_connections_total', frozenset()))}, "
              f"event log {conns}")
    want_tls = Counter((e.get("leg"), e.get("version") if e.get("ok") else "none",
                        "success" if e.get("ok") else "failure")
                       for e in ev if e.get("event") == "tls")
    got_tls = by(sam, "xmpp_inspect_tls_handshakes_total", "leg", "version", "result")
    ctx.check(got_tls == want_tls, f"tls: metrics {dict(got_tls)}, event log {dict(want_tls)}")
    n = sum(1 for e in ev if e.get("event") == "login" and e.get("outcome") in ("success", "failure"))
    ctx.check(sam.get(("xmpp_inspect_login_duration_seconds_count", frozenset())) == n,
              f"histogram count {sam.get(('xmpp_inspect_login_duration_seconds_count', frozenset()))}, "
              f"{n} logins with an outcome")
    return sam


def metrics_proxy(ctx, **extra):
    port = harness.free_port()
    px = ctx.proxy(metrics_listen=f"127.0.0.1:{port}", **extra)
    ok = harness.wait_until(lambda: port in harness._listening_ports(), 5)
    ctx.require(ok, "the metrics port is not listening")
    return px, port


@case("metrics_scrape_promtool")
def metrics_scrape_promtool(ctx):
    """Real logins through Prosody (PLAIN and SCRAM-SHA-1 by slixmpp, a wrong password, PLAIN in the clear that policy rejects), scraped with a session held open and after: promtool check metrics passes each scrape, and the counters are what the event log records (logins by outcome and mechanism, policy actions, connections, TLS handshakes); the sessions gauge saw the held session authenticated; build_info is 1; no label carries a user or an address."""
    px, mport = metrics_proxy(ctx, plain_without_tls="reject")
    promtool(ctx, scrape(ctx, mport), "before any session")
    for mech in ("PLAIN", "SCRAM-SHA-1"):
        r = ctx.client(px.port, mech=mech)
        ctx.check(r.get("ok"), f"{mech} login: {r}")
    r = ctx.client(px.port, password=WRONG, mech="PLAIN")
    ctx.check(not r.get("ok"), "a wrong password logged in")
    c = ctx.raw(px.port)
    c.open_stream()
    c.auth("PLAIN", raw.plain_payload("alice", USERS["alice"]))
    el = c.next_element()
    ctx.check(el is not None and raw.sasl_condition(el) == "encryption-required",
              f"PLAIN in clear: {c.describe(el)}")
    c.close()
    held = ctx.raw(px.port)
    try:
        raw.login_plain(held, "alice", USERS["alice"], resource="held")
    except AssertionError as e:
        ctx.require(False, f"held login: {e}")
    ctx.require(harness.wait_until(lambda: len(px.events.find("login")) >= 5, 5),
                f"login records: {px.events.find('login')}")
    during = scrape(ctx, mport)
    promtool(ctx, during, "during a held session")
    sam = samples(during)
    ctx.check(sam.get(("xmpp_inspect_sessions", frozenset({("state", "authenticated")}))) == 1,
              f"sessions gauge: {[(k, v) for k, v in sam.items() if k[0] == 'xmpp_inspect_sessions']}")
    held.send("</stream:stream>")
    held.wait_closed(3)
    ctx.check(harness.wait_until(lambda: len(px.events.find("close")) >= 5, 5), "sessions not closed")
    after = scrape(ctx, mport)
    promtool(ctx, after, "after")
    sam = check_against_log(ctx, px, after)
    ctx.check(any(k[0] == "xmpp_inspect_policy_actions_total" and ("action", "reject") in k[1]
                  for k in sam), "no policy reject counted")
    ctx.check(any(k[0] == "xmpp_inspect_logins_total" and ("outcome", "failure") in k[1] and v
                  for k, v in sam.items()), "no failed login counted")
    bi = [v for k, v in sam.items() if k[0] == "xmpp_inspect_build_info"]
    ctx.check(bi == [1.0], f"build_info: {bi}")
    ctx.check(sam.get(("xmpp_inspect_shared_state_up", frozenset())) == 1.0, "shared_state_up")
    for word in ("alice", "127.0.0.1", "lab.test"):
        ctx.check(word not in after, f"{word} appears in the metrics")


@case("metrics_hostile_http")
def metrics_hostile_http(ctx):
    """Hostile HTTP on the metrics port: a request larger than METRICS_REQUEST_MAX (431), binary garbage (400), POST (405), another path (404), a slowloris sending one byte every 0.4 s (closed at METRICS_TIMEOUT, 5 s), 40 connections at once (at most METRICS_MAX_CLIENTS held, the rest closed at once). Meanwhile an XMPP login through the proxy succeeds, and a scrape afterwards still works and passes promtool."""
    px, mport = metrics_proxy(ctx)
    st, _ = http(mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n")
    ctx.check(st and " 431 " in st, f"huge request: {st!r}")
    st, _ = http(mport, bytes(range(256)) * 4 + b"\n\n")
    ctx.check(st and " 400 " in st, f"binary garbage: {st!r}")
    st, _ = http(mport, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    ctx.check(st and " 405 " in st, f"POST: {st!r}")
    st, _ = http(mport, b"GET /../etc/passwd HTTP/1.0\r\n\r\n")
    ctx.check(st and " 404 " in st, f"other path: {st!r}")
    st, _ = http(mport, b"GET /metrics HTTP/2.0\r\n\r\n")
    ctx.check(st and " 400 " in st, f"HTTP/2.0 request line: {st!r}")

    # many at once: hold 40 connections open without a request
    many = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", mport), timeout=2)
        many.append(s)
    time.sleep(0.3)
    closed = 0
    for s in many:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    ctx.check(40 - closed <= 16, f"{40 - closed} of 40 idle connections held, want at most 16")
    ctx.check(40 - closed >= 1, "no idle connection held at all")
    for s in many:
        s.close()
    # the slots are free once the proxy has read their closes
    ctx.check(harness.wait_until(lambda: http(mport, b"GET /metrics HTTP/1.0\r\n\r\n")[0], 3),
              "no scrape served after the idle connections closed")

    # slowloris, while an XMPP login goes through
    slow = socket.create_connection(("127.0.0.1", mport), timeout=8)
    t0 = time.monotonic()
    r = ctx.client(px.port, mech="PLAIN")
    ctx.check(r.get("ok"), f"an XMPP login while the metrics port is under attack: {r}")
    gone = False
    for ch in b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 100:
        try:
            slow.send(bytes([ch]))
        except OSError:
            gone = True
            break
        try:
            slow.settimeout(0.4)
            if slow.recv(1) == b"":
                gone = True
                break
        except socket.timeout:
            pass
        except OSError:
            gone = True
            break
        if time.monotonic() - t0 > 8:
            break
    dt = time.monotonic() - t0
    ctx.check(gone and 4.0 <= dt <= 7.5, f"slowloris: closed {gone} after {dt:.1f}s, want ~5 s")
    slow.close()
    text = scrape(ctx, mport)
    promtool(ctx, text, "after the attack")
    sam = samples(text)
    ctx.check(sam.get(("xmpp_inspect_logins_total",
                       frozenset({("outcome", "success"), ("mechanism", "PLAIN")}))) == 1,
              "the login during the attack is counted")
