"""Issue 14 (performance): what the proxy does to be cheap must keep every
property it had. TLS session resumption on the upstream leg: only a session
whose certificate verified for the same name at the same address is
resumed, each ticket once, and a reload starts with none. And the upstream
leg ACKs at once (TCP_QUICKACK), so the server's Nagle never waits."""

import socket
import statistics
import threading
import time

import raw
from cases import case, PROSODY_VARIANTS, USERS
from harness import ANON_DOMAIN, DOMAIN

# Prosody with session tickets (its default no_ticket never resumes)
PROSODY_VARIANTS["tickets"] = dict(users=USERS, tickets=True)
PROSODY_VARIANTS["tickets_untrusted"] = dict(users=USERS, tickets=True, cert="untrusted")


def logins(ctx, px, n, first=0):
    """n PLAIN logins with bind, one after the other (sessions first to
    first + n - 1 of px); the upstream tls event of each (None where it is
    missing)."""
    out = []
    for i in range(first, first + n):
        c = ctx.raw(px.port)
        try:
            raw.login_plain(c, "alice", USERS["alice"], resource=f"perf{i}")
        except AssertionError as e:
            ctx.check(False, f"login {i}: {e}")
        c.close()
        s = ctx.session(px, index=i)
        s.expect(ctx, "login", outcome="success")
        out.append(s.first("tls", leg="upstream"))
    return out


def other_name_then_reload(ctx, px):
    """After three logins (sessions 0-2): a stream to another name on the
    same upstream (session 3), a reload, then two logins (sessions 4-5).
    The upstream tls event of the other name's handshake, and those of the
    two logins after the reload."""
    c = ctx.raw(px.port)
    c.open_stream(ANON_DOMAIN)
    anon = px.events.wait_for(lambda e: e.get("event") == "tls" and e.get("leg") == "upstream"
                              and e.get("sni") == ANON_DOMAIN, 5)
    c.close()
    ctx.require(anon, "no upstream tls event for the second name")
    ctx.session(px, index=3)
    px.reload()
    ctx.require(px.events.wait("reload", 5, detail="ok"), "no reload event")
    return anon, logins(ctx, px, 2, first=4)


@case("perf_upstream_resumed", prosody="tickets")
def perf_upstream_resumed(ctx):
    """Three logins in a row: the first upstream handshake is full, the
    next ones resume the ticket the upstream gave (resumed true) and still
    say verified true (the session stands for the certificate checked
    for lab.test); a stream to another name on the same upstream is not
    resumed; a reload's new context starts with no ticket."""
    # one ticket store: each worker keeps its own (workers = N resume from
    # each worker's second login on)
    px = ctx.proxy(workers="1")
    tls = logins(ctx, px, 3)
    ctx.require(all(tls), f"missing upstream tls events: {tls}")
    ctx.check(tls[0].get("resumed") is False, f"first handshake resumed: {tls[0]}")
    for t in tls[1:]:
        ctx.check(t.get("resumed") is True, f"later handshake not resumed: {t}")
        ctx.check(t.get("verified") is True, f"resumed handshake not verified: {t}")
    # another name on the same upstream address: its own full handshake
    # (the certificate must be checked for that name)
    anon, tls = other_name_then_reload(ctx, px)
    ctx.check(anon.get("resumed") is False, f"a ticket for {DOMAIN} resumed for {ANON_DOMAIN}: {anon}")
    ctx.check(tls[0] and tls[0].get("resumed") is False,
              f"first handshake after reload resumed an old context's ticket: {tls[0]}")
    ctx.check(tls[1] and tls[1].get("resumed") is True, f"not resumed after reload: {tls[1]}")


@case("perf_upstream_resumed_direct_tls", prosody="tickets")
def perf_upstream_resumed_direct_tls(ctx):
    """upstream_tls = direct (ALPN xmpp-client): resumed the same way."""
    px = ctx.proxy(upstream_tls="direct", workers="1")  # one ticket store
    tls = logins(ctx, px, 2)
    ctx.require(all(tls), f"missing upstream tls events: {tls}")
    ctx.check(tls[1].get("resumed") is True and tls[1].get("verified") is True,
              f"second Direct TLS handshake: {tls[1]}")


@case("perf_upstream_unverified_not_resumed", prosody="tickets_untrusted")
def perf_upstream_unverified_not_resumed(ctx):
    """upstream_verify = no toward a certificate that does not verify: the
    logins work, but no session is kept, so none is resumed (a resumed
    session shows no certificate: it may only stand for one that passed)."""
    px = ctx.proxy(upstream_verify="no")
    tls = logins(ctx, px, 3)
    ctx.require(all(tls), f"missing upstream tls events: {tls}")
    for t in tls:
        ctx.check(t.get("resumed") is False, f"an unverified session was resumed: {t}")
        ctx.check(t.get("verified") is False, f"untrusted certificate verified: {t}")


@case("perf_quickack_beats_nagle")
def perf_quickack_beats_nagle(ctx):
    """Stock Prosody writes with Nagle: its next small segment waits for the
    ACK of the last, which the peer delays up to 40 ms when it has nothing
    to send; a direct login meets that wait. The proxy ACKs the upstream at
    once (TCP_QUICKACK), so a login through it is faster than straight to
    Prosody (measured here ~12 vs ~53 ms p50; the case asks for 0.8x, a
    margin for a busy machine)."""
    prosody = ctx.prosody()
    px = ctx.proxy()

    def median_login(port, tag):
        times = []
        for i in range(7):
            c = ctx.raw(port)
            t0 = time.perf_counter()
            try:
                raw.login_plain(c, "alice", USERS["alice"], resource=f"{tag}{i}")
            except AssertionError as e:
                ctx.check(False, f"{tag} login {i}: {e}")
            times.append(time.perf_counter() - t0)
            c.close()
        return statistics.median(times)

    direct = median_login(prosody.port, "direct")
    proxied = median_login(px.port, "proxied")
    ctx.note(f"median login: direct {direct * 1000:.1f} ms, proxied {proxied * 1000:.1f} ms")
    ctx.check(proxied < 0.8 * direct,
              f"proxied login {proxied * 1000:.1f} ms not faster than direct {direct * 1000:.1f} ms")


class SwitchableForward:
    """A TCP forwarder whose target port can change between connections:
    one upstream address in the proxy's configuration, behind it first one
    server and then another (a certificate replaced, or an impostor, on the
    same name and address)."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


@case("perf_upstream_verify_cached")
def perf_upstream_verify_cached(ctx):
    """Stock Prosody gives no tickets, so every upstream handshake is full;
    the chain it sends is verified once and the result kept: the first
    login says verify_cached false, the next ones true (still verified).
    Another name on the same upstream is verified for that name, and a
    reload's new context verifies again."""
    # one verification cache: each worker keeps its own (workers = N)
    px = ctx.proxy(workers="1")
    tls = logins(ctx, px, 3)
    ctx.require(all(tls), f"missing upstream tls events: {tls}")
    ctx.check(tls[0].get("verified") is True and tls[0].get("verify_cached") is False,
              f"first handshake: {tls[0]}")
    for t in tls[1:]:
        ctx.check(t.get("resumed") is False, f"stock Prosody resumed: {t}")
        ctx.check(t.get("verified") is True and t.get("verify_cached") is True,
                  f"later handshake not from the cache: {t}")
    anon, tls = other_name_then_reload(ctx, px)
    ctx.check(anon.get("verify_cached") is False,
              f"a chain verified for {DOMAIN} taken as verified for {ANON_DOMAIN}: {anon}")
    ctx.check(tls[0] and tls[0].get("verify_cached") is False,
              f"first handshake after reload from the old context's cache: {tls[0]}")
    ctx.check(tls[1] and tls[1].get("verify_cached") is True, f"not cached after reload: {tls[1]}")


@case("perf_verify_cache_other_chain")
def perf_verify_cache_other_chain(ctx):
    """The same name at the same address, first with the lab CA's
    certificate, then with one from a CA the proxy does not trust: the
    cached result stands only for the chain it was computed on, so the
    second upstream is refused (certificate verification failed), and the
    first one, back again, is verified afresh (a replaced entry) or from
    the cache, but verified either way."""
    good, bad = ctx.prosody("default"), ctx.prosody("untrusted")
    fwd = SwitchableForward(good.port)
    try:
        # one cache, so the second login is a hit (each worker has its own)
        px = ctx.proxy(upstream_port=fwd.port, workers="1")
        tls = logins(ctx, px, 2)
        ctx.require(all(tls), f"missing upstream tls events: {tls}")
        ctx.check(tls[1].get("verify_cached") is True, f"second login not from the cache: {tls[1]}")
        fwd.target = bad.port
        c = ctx.raw(px.port)
        try:
            c.open_stream(DOMAIN)
            ctx.check(False, "the client was shown features from the impostor")
        except AssertionError as e:
            ctx.check("remote-connection-failed" in str(e), f"not a stream error: {e}")
        s = ctx.session(px, index=2)
        c.close()
        t = s.first("tls", leg="upstream")
        ctx.check(t is not None and t.get("ok") is False,
                  f"an untrusted chain passed after a trusted one was cached: {t}")
        ctx.check(t is None or "certificate verification failed" in (t.get("error") or ""),
                  f"refused, but not for the certificate: {t}")
        ctx.check(s.first("login", outcome="success") is None, "a login went through the impostor")
        fwd.target = good.port
        tls = logins(ctx, px, 1, first=3)
        ctx.check(tls[0] and tls[0].get("verified") is True, f"trusted upstream again: {tls[0]}")
    finally:
        fwd.close()
