"""Issue 14 (performance): what the proxy does to be cheap must keep every
property it had. TLS session resumption on the upstream leg: only a session
whose certificate verified for the same name at the same address is
resumed, each ticket once, and a reload starts with none. And the upstream
leg ACKs at once (TCP_QUICKACK), so the server's Nagle never waits."""

import statistics
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
    c = ctx.raw(px.port)
    c.open_stream(ANON_DOMAIN)
    anon = px.events.wait_for(lambda e: e.get("event") == "tls" and e.get("leg") == "upstream"
                              and e.get("sni") == ANON_DOMAIN, 5)
    c.close()
    ctx.require(anon, "no upstream tls event for the second name")
    ctx.check(anon.get("resumed") is False, f"a ticket for {DOMAIN} resumed for {ANON_DOMAIN}: {anon}")
    ctx.session(px, index=3)
    px.reload()
    ctx.require(px.events.wait("reload", 5, detail="ok"), "no reload event")
    tls = logins(ctx, px, 2, first=4)
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
