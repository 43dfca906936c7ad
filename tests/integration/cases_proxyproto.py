"""upstream_proxy_protocol (issue 12) against real receivers of the PROXY
header: ejabberd 23.01 (Debian) with `use_proxy_protocol: true`, and
HAProxy 2.6 with `bind ... accept-proxy` as an independent parser.

The proxy's upstream connection then starts with a PROXY header (v1 text,
or v2 binary with the TLVs AUTHORITY = the client's domain, UNIQUE_ID = the
session's sid, SSL for a Direct TLS client), so the server sees each
client's own address instead of the proxy's. The raw clients connect from
other loopback addresses (127.0.0.2, 127.0.0.3, ...: the whole 127/8 is
local on Linux), and what the server took from the header is read from the
server itself:

  ejabberd  its log ("Accepted proxied connection SRC:PORT -> DST:PORT",
            "Accepted c2s PLAIN authentication for ... from SRC"), its
            session table (`ejabberdctl connected_users_info`, while the
            sessions are held: ip and port of each session) and
            mod_fail2ban, which bans by that address;
  HAProxy   its log line per connection: %ci:%cp (the client), %fi:%fp
            (the destination), fc_pp_authority and fc_pp_unique_id.

  proxyproto_v2_ejabberd           v2: two clients, two addresses, both seen
  proxyproto_v1_ejabberd           v1: the same
  proxyproto_fail2ban_ejabberd     failed logins from 127.0.0.2 get 127.0.0.2
                                   banned by ejabberd; 127.0.0.3 still logs in
  proxyproto_off_ejabberd          the baseline: without the header ejabberd
                                   sees 127.0.0.1 (the proxy) for everyone
  proxyproto_off_fail2ban_ejabberd ... so one client's failures ban them all
  proxyproto_mismatch_ejabberd     header and listener disagree: what each
                                   side logs
  proxyproto_direct_tls_ejabberd   Direct TLS clients (SSL TLV) -> v2 ->
                                   ejabberd's STARTTLS and Direct TLS ports
  proxyproto_haproxy_parse         HAProxy reads our v2 and v1 headers: the
                                   client's address and port, the proxy's
                                   listening address, the domain, the sid
  proxyproto_idle_client_ejabberd  a client that connects and sends nothing
                                   must not hold up other clients' logins
                                   (the proxy connects upstream only once the
                                   client has named its domain)

One private ejabberd serves every case (about 3 s to start and register
the accounts; each ejabberdctl call costs about 1 s); it is kept in the
runner's servers under "ejabberd", so the runner stops it with the rest.
Without ejabberd (or not as root: it runs as user ejabberd) the ejabberd
cases SKIP; without haproxy the HAProxy case does.
"""

import sys
import time

import harness
import raw
from cases import USERS, WRONG, case

ALICE_PW = USERS["alice"]
BAN_TEXT = "Too many (3) failed authentications from this IP address"


# ------------------------------------------------------------ the server


def shared_ejabberd(ctx):
    """The run's ejabberd, started on first use (and again if it died)."""
    e = ctx.runner.servers.get("ejabberd")
    if e is not None and e.alive():
        return e
    if e is not None:
        e.stop()
        ctx.runner.servers.pop("ejabberd", None)
    try:
        e = harness.Ejabberd(USERS, max_auth_failures=3, ban_lifetime=60,
                             keep=ctx.runner.keep)
    except harness.ServerUnavailable as why:
        ctx.skip(str(why))
    ctx.runner.servers["ejabberd"] = e
    try:
        e.start()
    except harness.HarnessError as why:
        ctx.require(False, f"harness: ejabberd did not start: {why}")
    if ctx.runner.verbose:
        print(f"    ejabberd {harness.package_version('ejabberd')} started in "
              f"{e.start_seconds:.1f}s", file=sys.stderr, flush=True)
    return e


def ejabberd_case(name, prosody=None):
    """@case, with ejabberd's log added to the diagnostics of a failure."""
    def register(fn):
        def run(ctx):
            try:
                fn(ctx)
            finally:
                e = ctx.runner.servers.get("ejabberd")
                if ctx.problems and e is not None:
                    ctx.note(e.diagnostics())
        run.__doc__ = fn.__doc__
        run.__name__ = fn.__name__
        return case(name, prosody=prosody)(run)
    return register


# ------------------------------------------------------------ clients


class Held:
    """One raw client logged in through the proxy and kept open."""

    def __init__(self, c, source, resource):
        self.c = c
        self.source = source
        self.port = c.sock.getsockname()[1]
        self.resource = resource

    @property
    def peer(self):
        return f"{self.source}:{self.port}"


def hold_login(ctx, port, source, resource, direct_tls=False, user="alice"):
    """A PLAIN login from source through port, bound to resource and left
    open (the server lists only open sessions)."""
    c = ctx.raw(port, source=source, direct_tls=direct_tls)
    h = Held(c, source, resource)
    try:
        raw.login_plain(c, user, USERS[user], resource=resource)
    except AssertionError as e:
        ctx.require(False, f"login from {source} through :{port} failed: {e}")
    return h


def end_stream(h):
    """Closes a held client as a client does: </stream:stream>, then wait
    for the other side to close."""
    try:
        h.c.send("</stream:stream>")
        h.c.wait_closed(3)
    except OSError:
        pass
    h.c.close()


def to_features(c, to="lab.test"):
    """Stream header, STARTTLS if offered, the post-TLS features."""
    f = c.open_stream(to)
    if raw.has_starttls(f) != "none" and not c.tls:
        c.starttls()
        f = c.open_stream(to)
    return f


def error_text(c):
    """The <text> of the stream error c received, or ''."""
    for el in c.elements:
        if el.tag == raw.q(raw.NS_STREAM, "error"):
            t = el.find(raw.q(raw.NS_STANZAS, "text"))
            return t.text or "" if t is not None else ""
    return ""


def log_lines(e, mark, text, n, timeout=5.0):
    """ejabberd's log lines after mark containing text, once there are n
    of them (its logger writes a moment later), or those there are."""
    def lines():
        return [line for line in e.log_since(mark).splitlines() if text in line]
    return harness.wait_until(lambda: (lambda ls: ls if len(ls) >= n else None)(lines()),
                              timeout) or lines()


def check_sessions(ctx, e, held, want_ip=None):
    """ejabberd's session table (connected_users_info) lists each held
    client with its own address and port (want_ip: one address for all,
    the proxy's, and then not the client's port)."""
    rows = e.connected_users_info()
    for h in held:
        mine = [r for r in rows if r.get("resource") == h.resource]
        if not ctx.check(mine, f"connected_users_info has no session {h.resource}: {rows}"):
            continue
        r = mine[0]
        if want_ip is None:
            ctx.check(r.get("ip") == h.source and r.get("port") == str(h.port),
                      f"ejabberd lists {h.resource} at {r.get('ip')}:{r.get('port')}, "
                      f"the client is {h.peer}")
        else:
            ctx.check(r.get("ip") == want_ip and r.get("port") != str(h.port),
                      f"ejabberd lists {h.resource} at {r.get('ip')}:{r.get('port')} "
                      f"(want the proxy's {want_ip}, not the client's {h.peer})")
    return rows


def check_proxied_log(ctx, e, mark, held, dst_port):
    """ejabberd's log names each client: the PROXY header it accepted
    (client -> the proxy's listening address) and the login's address."""
    for h in held:
        ctx.check(e.wait_log(f"Accepted proxied connection {h.peer} -> 127.0.0.1:{dst_port}",
                             mark),
                  f"ejabberd log: no 'Accepted proxied connection {h.peer} -> "
                  f"127.0.0.1:{dst_port}'")
        ctx.check(e.wait_log(f"Accepted c2s PLAIN authentication for alice@lab.test by "
                             f"mnesia backend from {h.source}", mark),
                  f"ejabberd log: no PLAIN login from {h.source}")
    bad = [line for line in e.log_since(mark).splitlines() if "Proxy protocol parsing failed" in line]
    ctx.check(not bad, f"ejabberd could not parse a PROXY header: {bad[:2]}")


def check_login_events(ctx, px, held):
    for h in held:
        ev = px.events.wait("login", peer=h.peer, outcome="success")
        ctx.check(ev, f"no successful login event for {h.peer}")


# ------------------------------------------------------------ the cases


def _two_addresses(ctx, version):
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.port, upstream_proxy_protocol=version)
    mark = e.log_mark()
    held = [hold_login(ctx, px.port, "127.0.0.2", f"pp{version}-a"),
            hold_login(ctx, px.port, "127.0.0.3", f"pp{version}-b")]
    check_sessions(ctx, e, held)
    check_proxied_log(ctx, e, mark, held, px.port)
    check_login_events(ctx, px, held)
    for h in held:
        end_stream(h)


@ejabberd_case("proxyproto_v2_ejabberd")
def proxyproto_v2_ejabberd(ctx):
    """v2: clients from 127.0.0.2 and 127.0.0.3 through the proxy; ejabberd's session table and log show each one's own address and port."""
    _two_addresses(ctx, "v2")


@ejabberd_case("proxyproto_v1_ejabberd")
def proxyproto_v1_ejabberd(ctx):
    """v1: the same with the text header."""
    _two_addresses(ctx, "v1")


def _fail_three_times(ctx, port, source):
    """Three wrong PLAIN passwords on one stream from source; the third
    gets ejabberd's ban (a stream error) instead of a <failure/>."""
    c = ctx.raw(port, source=source)
    to_features(c)
    for i in (1, 2):
        c.auth("PLAIN", raw.plain_payload("alice", WRONG))
        el = c.next_element()
        ctx.require(el is not None and raw.local(el.tag) == "failure"
                    and raw.sasl_condition(el) == "not-authorized",
                    f"wrong password #{i} from {source}: want <failure><not-authorized/>, "
                    f"got {c.describe(el)}")
    c.auth("PLAIN", raw.plain_payload("alice", WRONG))
    cond = c.stream_error()
    ctx.check(cond == "policy-violation",
              f"wrong password #3 from {source}: want ejabberd's ban (policy-violation), "
              f"got {cond}: {c.describe()}")
    return c, error_text(c)


def _refused(ctx, port, source):
    """A new connection from source: ejabberd refuses the stream at once
    with its ban; returns the text."""
    c = ctx.raw(port, source=source)
    c.send(raw.header())
    cond = c.stream_error()
    ctx.check(cond == "policy-violation",
              f"a banned client ({source}) got {cond}, want policy-violation: {c.describe()}")
    return error_text(c)


@ejabberd_case("proxyproto_fail2ban_ejabberd")
def proxyproto_fail2ban_ejabberd(ctx):
    """v2 + mod_fail2ban: three failed logins from 127.0.0.2 get 127.0.0.2 banned (its next connection is refused with ejabberd's ban message); 127.0.0.3 still logs in through the same proxy."""
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.port, upstream_proxy_protocol="v2")
    mark = e.log_mark()
    try:
        _, text = _fail_three_times(ctx, px.port, "127.0.0.2")
        ctx.check(f"{BAN_TEXT} (127.0.0.2)" in text,
                  f"ban message does not name 127.0.0.2: {text!r}")
        text = _refused(ctx, px.port, "127.0.0.2")
        ctx.check(f"{BAN_TEXT} (127.0.0.2)" in text,
                  f"the banned client's refusal does not name 127.0.0.2: {text!r}")
        failed = log_lines(e, mark, "Failed c2s PLAIN authentication for alice@lab.test "
                           "from 127.0.0.2", 3)
        ctx.check(len(failed) == 3, f"ejabberd logged {len(failed)} failed logins from "
                  "127.0.0.2, want 3")
        ctx.check(e.wait_log("Connection attempt from blacklisted IP 127.0.0.2", mark),
                  "ejabberd log: no 'Connection attempt from blacklisted IP 127.0.0.2'")
        ev = px.events.wait("stream_error", dir="s2c", condition="policy-violation")
        ctx.check(ev and "127.0.0.2" in (ev.get("text") or ""),
                  f"proxy event for the ban: {ev}")
        # the same proxy, another client address: not banned
        ok = hold_login(ctx, px.port, "127.0.0.3", "f2b-ok")
        check_proxied_log(ctx, e, mark, [ok], px.port)
        check_login_events(ctx, px, [ok])
        end_stream(ok)
    finally:
        removed = e.unban("127.0.0.2")
    ctx.check(removed == 1, f"unban_ip 127.0.0.2 removed {removed} entries, want 1 (the ban)")


@ejabberd_case("proxyproto_off_ejabberd")
def proxyproto_off_ejabberd(ctx):
    """The baseline: upstream_proxy_protocol = off to a listener without use_proxy_protocol; ejabberd sees 127.0.0.1 (the proxy, from its own ports) for both clients."""
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.plain_port, upstream_proxy_protocol="off")
    mark = e.log_mark()
    held = [hold_login(ctx, px.port, "127.0.0.2", "off-a"),
            hold_login(ctx, px.port, "127.0.0.3", "off-b")]
    check_sessions(ctx, e, held, want_ip="127.0.0.1")
    logins = log_lines(e, mark, "Accepted c2s PLAIN authentication for alice@lab.test", 2)
    ctx.check(len(logins) == 2 and all(line.endswith("from 127.0.0.1") for line in logins),
              f"ejabberd's logins without the header: {logins}")
    ctx.check("Accepted proxied connection" not in e.log_since(mark),
              "a proxied connection on a listener without use_proxy_protocol")
    check_login_events(ctx, px, held)  # the proxy's own log still has the clients
    for h in held:
        end_stream(h)


@ejabberd_case("proxyproto_off_fail2ban_ejabberd")
def proxyproto_off_fail2ban_ejabberd(ctx):
    """Why the header matters: without it, three failed logins from 127.0.0.2 get 127.0.0.1, the proxy, banned, and 127.0.0.3 is refused too."""
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.plain_port, upstream_proxy_protocol="off")
    try:
        _, text = _fail_three_times(ctx, px.port, "127.0.0.2")
        ctx.check(f"{BAN_TEXT} (127.0.0.1)" in text, f"ban message: {text!r}")
        text = _refused(ctx, px.port, "127.0.0.3")
        ctx.check(f"{BAN_TEXT} (127.0.0.1)" in text,
                  f"an innocent client (127.0.0.3) should be refused as 127.0.0.1: {text!r}")
    finally:
        removed = e.unban("127.0.0.1")
    ctx.check(removed == 1, f"unban_ip 127.0.0.1 removed {removed} entries, want 1")


@ejabberd_case("proxyproto_mismatch_ejabberd")
def proxyproto_mismatch_ejabberd(ctx):
    """Header and listener disagree: no login, an error for the client at once, and each log says why. A v1 or v2 header toward a listener that expects none: ejabberd reads it as the stream and answers not-well-formed (relayed); none toward a use_proxy_protocol listener: ejabberd cannot parse our stream header as one and closes (remote-connection-failed)."""
    e = shared_ejabberd(ctx)
    for version in ("v1", "v2"):
        px = ctx.proxy(upstream_port=e.plain_port, upstream_proxy_protocol=version)
        mark = e.log_mark()
        c = ctx.raw(px.port, source="127.0.0.2")
        c.send(raw.header())
        cond = c.stream_error()
        ctx.check(cond == "not-well-formed",
                  f"{version} to a listener without use_proxy_protocol: the client got "
                  f"{cond}, want ejabberd's not-well-formed: {c.describe()}")
        ctx.check(px.events.wait("stream_error", dir="s2c", condition="not-well-formed"),
                  f"{version} to a plain listener: no stream_error event")
        ctx.check(e.wait_log(f"-> 127.0.0.1:{e.plain_port}", mark)
                  and "Accepted proxied connection" not in e.log_since(mark),
                  f"{version} to a plain listener: ejabberd should log an unproxied connection")
    px = ctx.proxy(upstream_port=e.port, upstream_proxy_protocol="off")
    mark = e.log_mark()
    c = ctx.raw(px.port, source="127.0.0.2")
    c.send(raw.header())
    cond = c.stream_error()
    ctx.check(cond == "remote-connection-failed",
              f"no header to a use_proxy_protocol listener: the client got {cond}, want "
              f"remote-connection-failed: {c.describe()}")
    ctx.check(e.wait_log("Proxy protocol parsing failed", mark),
              "ejabberd log: no 'Proxy protocol parsing failed' for a connection without the "
              "header")
    ctx.check(px.events.wait("close", timeout=5), "no close event")


@ejabberd_case("proxyproto_direct_tls_ejabberd")
def proxyproto_direct_tls_ejabberd(ctx):
    """Direct TLS clients (v2 then carries the SSL TLV, which ejabberd ignores) log in through the proxy to ejabberd's STARTTLS port and, with upstream_tls = direct, to its Direct TLS port (the header before the ClientHello); each seen with its own address."""
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.port, upstream_proxy_protocol="v2")
    pxd = ctx.proxy(upstream_port=e.tls_port, upstream_tls="direct",
                    upstream_proxy_protocol="v2")
    mark = e.log_mark()
    a = hold_login(ctx, px.tls_port, "127.0.0.2", "dtls-a", direct_tls=True)
    b = hold_login(ctx, pxd.tls_port, "127.0.0.3", "dtls-b", direct_tls=True)
    check_sessions(ctx, e, [a, b])
    check_proxied_log(ctx, e, mark, [a], px.tls_port)
    check_proxied_log(ctx, e, mark, [b], pxd.tls_port)
    for p, h in ((px, a), (pxd, b)):
        ev = p.events.wait("login", peer=h.peer, outcome="success")
        ctx.check(ev and ev.get("client_tls"), f"login event of {h.peer}: {ev}")
    for h in (a, b):
        end_stream(h)


@case("proxyproto_haproxy_parse", prosody="default")
def proxyproto_haproxy_parse(ctx):
    """HAProxy (accept-proxy, TCP mode) in front of Prosody parses our headers as we meant them: v2 from a STARTTLS and a Direct TLS client, v1 from a third; %ci:%cp is each client, %fi:%fp the proxy port it connected to, AUTHORITY lab.test and UNIQUE_ID the session's sid (v2)."""
    p = ctx.prosody()
    h = ctx.server(lambda: harness.HAProxy(p.port, name=f"haproxy-{ctx.case.name}",
                                           keep=ctx.runner.keep), "haproxy")
    try:
        px = ctx.proxy(upstream_port=h.port, upstream_proxy_protocol="v2")
        px1 = ctx.proxy(upstream_port=h.port, upstream_proxy_protocol="v1")
        clients = [(px, hold_login(ctx, px.port, "127.0.0.2", "hap-a"), px.port, "v2"),
                   (px, hold_login(ctx, px.tls_port, "127.0.0.3", "hap-b", direct_tls=True),
                    px.tls_port, "v2"),
                   (px1, hold_login(ctx, px1.port, "127.0.0.4", "hap-c"), px1.port, "v1")]
        for _, held, _, _ in clients:
            end_stream(held)
        lines = harness.wait_until(lambda: (lambda ls: ls if len(ls) >= 3 else None)(h.lines()), 5)
        ctx.require(lines, f"haproxy logged {len(h.lines())} connections, want 3")
        for proxy, held, dst_port, version in clients:
            mine = [l for l in lines if l.get("ci") == held.source]
            if not ctx.check(len(mine) == 1, f"haproxy lines for {held.source}: {mine} (all: {lines})"):
                continue
            got = mine[0]
            ctx.check(got.get("cp") == str(held.port),
                      f"{version}: haproxy read client port {got.get('cp')}, the client's is "
                      f"{held.port}")
            ctx.check(got.get("fi") == "127.0.0.1" and got.get("fp") == str(dst_port),
                      f"{version}: haproxy read destination {got.get('fi')}:{got.get('fp')}, "
                      f"the client connected to 127.0.0.1:{dst_port}")
            connect = proxy.events.wait("connect", peer=held.peer)
            sid = str(connect.get("sid")) if connect else "?"
            if version == "v2":
                ctx.check(got.get("authority") == "lab.test",
                          f"v2 AUTHORITY as haproxy read it: {got.get('authority')!r}")
                ctx.check(got.get("unique_id") == sid,
                          f"v2 UNIQUE_ID as haproxy read it: {got.get('unique_id')!r}, the "
                          f"session's sid is {sid}")
            else:
                ctx.check(got.get("authority") in ("-", "") and got.get("unique_id") in ("-", ""),
                          f"v1 has no TLVs, haproxy read {got}")
            ev = proxy.events.wait("login", peer=held.peer, outcome="success")
            ctx.check(ev, f"{version}: no successful login for {held.peer} through haproxy")
    finally:
        if ctx.problems:
            ctx.note(h.diagnostics())


@ejabberd_case("proxyproto_idle_client_ejabberd")
def proxyproto_idle_client_ejabberd(ctx):
    """A client that connects and sends nothing must not hold up another
    client's login through the same proxy. ejabberd reads a PROXY header in
    its listener's one accept loop (10 s timeout), so the proxy connects
    upstream only once the client has named its domain, and the header goes
    at once: an idle client gets no upstream connection at all."""
    e = shared_ejabberd(ctx)
    px = ctx.proxy(upstream_port=e.port, upstream_proxy_protocol="v2")
    mark = e.log_mark()
    idle = ctx.raw(px.port, source="127.0.0.4")
    idle_peer = f"127.0.0.4:{idle.sock.getsockname()[1]}"
    connect = px.events.wait("connect", peer=idle_peer)
    ctx.require(connect, f"no connect event for the idle client: {px.events.read()}")
    budget = 3.0
    c = ctx.raw(px.port, source="127.0.0.3", timeout=budget)
    t0 = time.monotonic()
    try:
        raw.login_plain(c, "alice", ALICE_PW, resource="idle-other")
        stalled = False
    except AssertionError as why:
        stalled = True
        ctx.note(f"the other login after {time.monotonic() - t0:.1f}s: {why}")
    c.close()
    ctx.check(not px.events.find("upstream", sid=connect["sid"]),
              "an upstream connection was made for a client that named no domain")
    idle.close()
    # ejabberd takes the next connection once the idle one is gone
    later = ctx.raw(px.port, source="127.0.0.3", timeout=5)
    try:
        raw.login_plain(later, "alice", ALICE_PW, resource="idle-later")
    except AssertionError as why:
        ctx.require(False, f"ejabberd did not recover once the idle client left: {why}")
    later.send("</stream:stream>")
    later.wait_closed(3)
    if stalled:
        line = e.wait_log("Proxy protocol parsing failed", mark, timeout=2) or ""
        ctx.check(False, "one idle client held up another's login for more than "
                  f"{budget:.0f} s; ejabberd, once it left: {line.split(') ', 1)[-1] or 'nothing'}")
