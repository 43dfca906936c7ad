"""workers = N (issue 14, item 3): forked event loops sharing the ports,
still one proxy to whoever uses it. Real Prosody, raw and slixmpp clients;
which worker holds a connection is read from /proc (the worker whose
socket's peer is the client's port).

  workers_spread            logins spread over both workers; sids unique
  workers_max_sessions      max_sessions 3 across workers: exactly 3 of 12
  workers_max_per_addr      max_per_addr 4 across workers: exactly 4 of 12
  workers_auth_failures     auth_failures 3/60 across workers: 12 parallel
                            wrong passwords, 3 reach the server
  workers_log_whole         60 logins at once: every line whole JSON, each
                            session's events once, key log lines whole
  workers_reload            SIGHUP: mechanisms_deny PLAIN seen by both
                            workers; one reload event; a bad one refused
                            once
  workers_sigterm           SIGTERM with sessions open: drained, one stop
                            event, no process left
  workers_respawn           SIGKILL of one worker: the other's sessions go
                            on, a new worker is forked, logins work
  workers_supervisor_dies   SIGKILL of the supervisor: the workers end
  workers_metrics           counters summed over workers, whoever answers
  workers_config            -t refuses workers 0, 65, x; the default runs
                            one worker per core
  workers_nofile            the descriptor limit is per worker
  workers_redis             shared_state: one Redis instance per worker
"""

import json
import os
import signal
import socket
import threading
import time

import harness
import raw
from cases import USERS, WRONG, case, plain_attempt, sids

ALICE_PW = USERS["alice"]


def tcp_peers():
    """inode -> (local port, remote port) of every TCP socket."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    lport = int(fields[1].rsplit(":", 1)[1], 16)
                    rport = int(fields[2].rsplit(":", 1)[1], 16)
                    out[fields[9]] = (lport, rport)
        except OSError:
            pass
    return out


def holders(px, clients):
    """For each client (a RawClient), the pid of the worker holding its
    connection (None if none does)."""
    peers = tcp_peers()
    by_port = {}
    for pid in harness.worker_pids(px.proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                lr = peers.get(target[8:-1])
                if lr and lr[0] in (px.port, px.tls_port):
                    by_port[lr[1]] = pid
    return [by_port.get(c.sock.getsockname()[1]) for c in clients]


def workers_proxy(ctx, n=2, **keys):
    px = ctx.proxy(workers=str(n), **keys)
    ctx.require(len(harness.worker_pids(px.proc.pid)) == n,
                f"{n} workers wanted: {harness.proc_tree(px.proc.pid)}")
    return px


def open_many(ctx, px, n, source=None):
    """n raw connections, each with its stream open (its session started)."""
    cs = []
    for _ in range(n):
        c = ctx.raw(px.port, source=source)
        c.open_stream()
        cs.append(c)
    return cs


def parallel(n, fn):
    """fn(i) for i in range(n), all at once in threads; their results."""
    out = [None] * n
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def attempt(ctx, port, password, hold=None):
    """plain_attempt with the longer wait two workers under ASan need;
    hold: the client is kept there (open) instead of closed."""
    return plain_attempt(ctx, port, password, timeout=8, hold=hold)


def login(ctx, port, resource="w"):
    c = ctx.raw(port, timeout=8)
    try:
        raw.login_plain(c, "alice", ALICE_PW, resource=resource)
        return c
    except (AssertionError, OSError):
        c.close()
        return None


def echo(c, jid, body):
    """A message to its own full JID, and back: the session works."""
    try:
        c.send(f"<message to='{jid}' type='chat' id='e'><body>{body}</body></message>")
        el = c.expect("message", timeout=5)
        return el is not None
    except (AssertionError, OSError):
        return False


def scrape(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = b""
    while chunk := s.recv(65536):
        text += chunk
    s.close()
    return text.decode(errors="replace")


def metric(text, line_start):
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


@case("workers_spread")
def workers_spread(ctx):
    """workers = 2: 16 sessions held open land on both workers (each
    accepted some: the kernel spreads them over the two SO_REUSEPORT
    sockets), every session's sid is its own, and the proxy is one
    supervisor with two children."""
    px = workers_proxy(ctx)
    cs = open_many(ctx, px, 16)
    ctx.require(harness.wait_until(lambda: len(px.events.find("connect")) == 16, 5),
                f"{len(px.events.find('connect'))} of 16 sessions")
    who = holders(px, cs)
    workers = set(harness.worker_pids(px.proc.pid))
    ctx.check(None not in who, f"connections no worker holds: {who}")
    ctx.check(set(who) == workers, f"sessions on {sorted(set(who))}, workers {sorted(workers)}")
    connects = px.events.find("connect")
    ctx.check(len({e["sid"] for e in connects}) == 16, f"sids {[e['sid'] for e in connects]}")
    r = ctx.client(px.port)  # slixmpp: a real client through it
    ctx.check(r.get("ok"), f"slixmpp login: {r.get('error')}")
    ctx.check(px.events.find("start") and len(px.events.find("start")) == 1
              and px.events.find("start")[0].get("workers") == 2,
              f"start events: {px.events.find('start')}")


@case("workers_max_sessions")
def workers_max_sessions(ctx):
    """max_sessions = 3 with two workers: twelve connections at once,
    exactly three become sessions, nine are refused (rule max_sessions),
    on both workers; once one ends a new one fits."""
    px = workers_proxy(ctx, max_sessions="3")
    cs = parallel(12, lambda i: ctx.raw(px.port))
    ctx.require(harness.wait_until(lambda: len(px.events.find("connect")) +
                                   len(px.events.find("refused")) >= 12, 5),
                "not every connection was answered")
    ctx.check(len(px.events.find("connect")) == 3,
              f"{len(px.events.find('connect'))} sessions, want 3")
    refused = px.events.find("refused")
    ctx.check(len(refused) == 9 and all(e.get("rule") == "max_sessions" for e in refused),
              f"refused: {refused}")
    kept = [c for c in cs if not c.wait_closed(0.5)]
    ctx.check(len(kept) == 3, f"{len(kept)} connections stayed open")
    kept[0].close()
    ctx.require(harness.wait_until(lambda: px.events.find("close"), 5), "no close")
    def one():
        c = login(ctx, px.port)
        if c is None:
            return None
        c.close()
        return True
    ctx.check(harness.wait_until(one, 5), "no login once a place was free")


@case("workers_max_per_addr")
def workers_max_per_addr(ctx):
    """max_per_addr = 4 with two workers: twelve connections at once from
    127.0.0.1, exactly four sessions; from 127.0.0.2 meanwhile, one more."""
    px = workers_proxy(ctx, max_per_addr="4")
    parallel(12, lambda i: ctx.raw(px.port))
    ctx.require(harness.wait_until(lambda: len(px.events.find("connect")) +
                                   len(px.events.find("refused")) >= 12, 5),
                "not every connection was answered")
    ctx.check(len(px.events.find("connect")) == 4,
              f"{len(px.events.find('connect'))} sessions from one address, want 4")
    ctx.check(len(px.events.find("refused", rule="max_per_addr")) == 8,
              f"refused: {px.events.find('refused')}")
    other = ctx.raw(px.port, source="127.0.0.2")
    ctx.check(harness.wait_until(lambda: len(px.events.find("connect")) == 5, 5),
              "another address was refused too")
    other.close()


@case("workers_auth_failures")
def workers_auth_failures(ctx):
    """auth_failures = 3/60 with two workers: twelve wrong passwords from
    one address on twelve connections at once (so on both workers): at
    most three reach the server, whichever worker has them; the others are
    refused with <temporary-auth-failure/>; then even the right password
    is refused until the window ends."""
    px = workers_proxy(ctx, auth_failures="3/60")
    held = []
    got = parallel(12, lambda i: attempt(ctx, px.port, WRONG, hold=held))
    who = holders(px, held)
    ctx.note(f"answers {got}; workers {who}")
    ctx.check(len(set(p for p in who if p)) == 2, f"the attempts were not on both workers: {who}")
    reached = px.events.find("auth_result", by="upstream")
    ctx.check(len(reached) == 3, f"{len(reached)} attempts reached the server, want 3")
    ctx.check(got.count("not-authorized") == 3 and got.count("temporary-auth-failure") == 9,
              f"answers: {got}")
    for c in held:
        c.close()
    ctx.check(attempt(ctx, px.port, ALICE_PW) == "temporary-auth-failure",
              "the right password within the window")
    ctx.check(len(px.events.find("auth_result", by="upstream")) == 3, "it reached the server")


@case("workers_log_whole")
def workers_log_whole(ctx):
    """Sixty logins at once over two workers writing the same event log and
    key log (O_APPEND, whole lines per write): every line of both is whole
    (the event log's all JSON: the runner checks that too), every session
    has one connect, one login and one close, and no sid is used twice."""
    px = workers_proxy(ctx)

    def one(i):
        c = login(ctx, px.port, resource=f"r{i}")
        if c is None:
            return False
        c.send("</stream:stream>")
        c.wait_closed()
        c.close()
        return True
    ok = parallel(60, one)
    ctx.check(all(ok), f"{ok.count(False)} of 60 logins failed")
    ctx.require(harness.wait_until(lambda: len(px.events.find("close")) >= 60, 10),
                f"{len(px.events.find('close'))} of 60 closes")
    px.stop()
    data = px.event_log.read_bytes()
    ctx.check(data.endswith(b"\n"), "the event log ends inside a line")
    per_sid = {}
    for n, line in enumerate(data.split(b"\n")[:-1]):
        try:
            e = json.loads(line)
        except ValueError:
            ctx.check(False, f"line {n + 1} is not JSON: {line[:120]!r}")
            break
        if e.get("sid"):
            per_sid.setdefault(e["sid"], []).append(e["event"])
    ctx.check(len(per_sid) == 60, f"{len(per_sid)} sessions in the log")
    for sid, evs in per_sid.items():
        if not (evs.count("connect") == 1 and evs.count("login") == 1 and evs.count("close") == 1
                and evs[0] == "connect" and evs[-1] == "close"):
            ctx.check(False, f"session {sid}: {evs}")
            break
    keys = px.keylog.read_bytes()
    bad = [l for l in keys.split(b"\n")[:-1] if len(l.split(b" ")) != 3]
    ctx.check(keys.endswith(b"\n") and not bad, f"key log lines not whole: {bad[:2]}")


@case("workers_reload")
def workers_reload(ctx):
    """SIGHUP to the supervisor: both workers apply mechanisms_deny = PLAIN
    (ten attempts, on both workers, all refused invalid-mechanism), and the
    log has one reload event, written once every worker applied it; a bad
    configuration is refused once (one reload failed event, one message on
    stderr) and the running one kept."""
    px = workers_proxy(ctx)
    px.reload(mechanisms_deny="PLAIN")
    ctx.require(px.events.wait("reload", 5, detail="ok"), "no reload event")
    ctx.check(len(px.events.find("reload")) == 1, f"reload events: {px.events.find('reload')}")
    held = []
    got = parallel(10, lambda i: attempt(ctx, px.port, ALICE_PW, hold=held))
    who = holders(px, held)
    ctx.check(len(set(p for p in who if p)) == 2, f"the attempts were not on both workers: {who}")
    ctx.check(got == ["invalid-mechanism"] * 10, f"after the reload: {got}")
    for c in held:
        c.close()
    px.reload(max_sessions="zero")
    ctx.require(px.events.wait("reload", 5, detail="failed"), "no reload failed event")
    ctx.check(len(px.events.find("reload")) == 2, f"reload events: {px.events.find('reload')}")
    ctx.check(px.stderr().count("reload failed") == 1,
              f"the bad configuration reported {px.stderr().count('reload failed')} times")
    ctx.check(attempt(ctx, px.port, ALICE_PW) == "invalid-mechanism", "the running one kept")


@case("workers_sigterm")
def workers_sigterm(ctx):
    """SIGTERM to the supervisor with logged-in sessions on both workers:
    a new connection is refused at once (no listening socket left, the
    supervisor's included), each client is told the stream ends, the proxy
    exits 0, one stop event, and no process of it is left."""
    px = workers_proxy(ctx)
    cs = [c for c in (login(ctx, px.port, f"t{i}") for i in range(8)) if c]
    ctx.require(len(cs) == 8, f"{len(cs)} of 8 logins")
    ctx.check(len(set(holders(px, cs))) == 2, "the sessions are not on both workers")
    tree = harness.proc_tree(px.proc.pid)
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", px.port), timeout=1).close()
            return None
        except ConnectionRefusedError:
            return True
        except OSError:
            return None
    # no socket of the port is left listening (the supervisor's copies
    # included): a client during the drain is refused, not left waiting
    ctx.check(harness.wait_until(refused, 3), "connections still accepted during the drain")
    status = px.stop()
    ctx.check(status == 0 and not px.killed, f"exit status {status} (killed: {px.killed})")
    ctx.check(time.monotonic() - t0 < 8, f"the drain took {time.monotonic() - t0:.1f} s")
    ctx.check(all(c.wait_closed(3) for c in cs), "a client was not closed")
    gone = harness.wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in tree), 3)
    ctx.check(gone, f"processes left: {[p for p in tree if os.path.exists(f'/proc/{p}')]}")
    ctx.check(len(px.events.find("stop")) == 1, f"stop events: {px.events.find('stop')}")
    # every session closed in the log (the probes above may have made a
    # session or two before the sockets closed: theirs close too)
    closed = {e["sid"] for e in px.events.find("close")}
    logged_in = {e["sid"] for e in px.events.find("login", outcome="success")}
    connected = {e["sid"] for e in px.events.find("connect")}
    ctx.check(len(logged_in) == 8 and connected <= closed,
              f"{len(logged_in)} logins, sessions without a close: {sorted(connected - closed)}")


@case("workers_respawn")
def workers_respawn(ctx):
    """SIGKILL of one worker: its sessions are lost, the other worker's
    go on (a message round trip), the supervisor says so on stderr and
    forks another worker within a second, and logins work again (ten in a
    row, none lost: the dead worker's sockets kept their queue); the new
    one killed at once too is forked again after twice the pause."""
    px = workers_proxy(ctx)
    jids, cs = [], []
    for i in range(10):
        c = ctx.raw(px.port, timeout=8)
        try:
            jids.append(raw.login_plain(c, "alice", ALICE_PW, resource=f"k{i}"))
            cs.append(c)
        except AssertionError as e:
            ctx.require(False, f"login {i}: {e}")
    who = holders(px, cs)
    workers = harness.worker_pids(px.proc.pid)
    ctx.require(len(set(who)) == 2, f"sessions on {set(who)}")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    ctx.check(harness.wait_until(lambda: "forking another" in px.stderr(), 3),
              f"stderr: {px.stderr()[-300:]!r}")
    for c, j, w in zip(cs, jids, who):
        if w != victim:
            ctx.check(echo(c, j, "still here"), f"a session of the other worker broke ({j})")
        else:
            ctx.check(c.wait_closed(3), "a session of the dead worker stayed open")
    ok = harness.wait_until(lambda: (lambda now: len(now) == 2 and victim not in now)(
        harness.worker_pids(px.proc.pid)), 3)
    ctx.check(ok, f"workers after the kill: {harness.worker_pids(px.proc.pid)}")
    done = 0
    for i in range(10):
        c = login(ctx, px.port, f"n{i}")
        done += c is not None
        if c:
            c.close()
    ctx.check(done == 10, f"{done} of 10 logins after the respawn")
    sids_seen = [e["sid"] for e in px.events.find("connect")]
    ctx.check(len(set(sids_seen)) == len(sids_seen), "a sid was used twice across the respawn")
    # the new worker dies at once too: the pause doubles (no fork loop)
    again = [p for p in harness.worker_pids(px.proc.pid) if p not in workers]
    ctx.require(len(again) == 1, f"the new worker: {again}")
    os.kill(again[0], signal.SIGKILL)
    ctx.check(harness.wait_until(lambda: "forking another in 0.2 s" in px.stderr(), 3),
              f"the second death's pause: {px.stderr()[-300:]!r}")
    ctx.check(harness.wait_until(lambda: len(harness.worker_pids(px.proc.pid)) == 2, 3),
              "no worker forked after the second death")


@case("workers_supervisor_dies")
def workers_supervisor_dies(ctx):
    """SIGKILL of the supervisor: the workers get SIGTERM (PR_SET_PDEATHSIG)
    and end, leaving no orphan holding the port."""
    px = workers_proxy(ctx)
    workers = harness.worker_pids(px.proc.pid)
    px.proc.kill()
    px.proc.wait(5)
    px.exit_status = 0  # killed on purpose
    gone = harness.wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and
                                              "zombie" not in open(f"/proc/{p}/status").read()
                                              for p in workers), 8)
    ctx.check(gone, f"workers left after the supervisor died: {workers}")
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", px.port))
        free = True
    except OSError:
        free = False
    s.close()
    ctx.check(free, "the port is still held")


@case("workers_metrics")
def workers_metrics(ctx):
    """metrics_listen with two workers: after 12 logins every scrape
    (whichever worker answers: eight scrapes land on both) says 12
    connections and 12 PLAIN successes, xmpp_inspect_workers 2, and the
    sessions gauge counts the sessions held on both workers."""
    mport = harness.free_port()
    px = workers_proxy(ctx, metrics_listen=f"127.0.0.1:{mport}")
    for i in range(12):
        c = login(ctx, px.port, f"m{i}")
        ctx.require(c is not None, f"login {i}")
        c.close()
    ctx.require(harness.wait_until(lambda: len(px.events.find("close")) == 12, 5), "closes")
    held = [c for c in (login(ctx, px.port, f"h{i}") for i in range(6)) if c]
    ctx.check(len(set(holders(px, held))) == 2, "the held sessions are not on both workers")
    # the gauges are published every 0.25 s: wait for both workers' share
    gauge = 'xmpp_inspect_sessions{state="authenticated"}'
    ctx.check(harness.wait_until(lambda: metric(scrape(mport), gauge) == 6, 5),
              "the authenticated gauge never reached the 6 held sessions")
    for _ in range(8):
        t = scrape(mport)
        ctx.check(metric(t, "xmpp_inspect_connections_total") == 18,
                  f"connections_total {metric(t, 'xmpp_inspect_connections_total')}, want 18")
        ctx.check(metric(t, 'xmpp_inspect_logins_total{outcome="success",mechanism="PLAIN"}') == 18,
                  "logins_total not summed")
        ctx.check(metric(t, "xmpp_inspect_workers") == 2, "xmpp_inspect_workers")
        auth = metric(t, 'xmpp_inspect_sessions{state="authenticated"}')
        ctx.check(auth == 6, f"authenticated gauge {auth}, want 6")
        if ctx.problems:
            break


@case("workers_config", prosody=None)
def workers_config(ctx):
    """-t refuses workers = 0, 65 and x (the key, its range, file:line);
    accepts 1 and 64; the default runs one worker per online core."""
    px = ctx.proxy(upstream_port=harness.port_refusing(), start=False)
    px.write_config()
    for bad in ("0", "65", "x", "-1"):
        r = ctx.run_bin(["-t", "-c", str(px.config), "-o", f"workers={bad}"])
        out = r.stdout + r.stderr
        ctx.check(r.returncode == 1 and "workers" in out and "1 to 64" in out,
                  f"-t with workers={bad}: status {r.returncode}: {out.strip()[:200]}")
    for good in ("1", "64"):
        r = ctx.run_bin(["-t", "-c", str(px.config), "-o", f"workers={good}"])
        ctx.check(r.returncode == 0, f"-t with workers={good}: {(r.stdout + r.stderr).strip()[:200]}")
    dflt = ctx.proxy(upstream_port=harness.port_refusing())
    n = min(64, os.sysconf("SC_NPROCESSORS_ONLN"))
    got = harness.worker_pids(dflt.proc.pid)
    ctx.check(len(got) == n if n > 1 else got == [dflt.proc.pid],
              f"default: {len(got)} workers for {n} cores")
    one = ctx.proxy(upstream_port=harness.port_refusing(), workers="1")
    ctx.check(harness.proc_tree(one.proc.pid) == [one.proc.pid], "workers = 1 forked")
    ctx.check(not one.events.wait("start", 3).get("workers"), "workers = 1: start says workers")


@case("workers_nofile")
def workers_nofile(ctx):
    """The descriptor limit is per process: with two workers and a limit
    that fits eight sessions in one, max_sessions is lowered to 16 and each
    worker takes at most 8 (the kernel's spread is not even): 24
    connections at once, the ones past a worker's 8 are refused at accept
    (rule max_sessions), none fails for want of a descriptor."""
    from cases_daemon import FIXED, through, start
    limit = 2 * 8 + 2 + FIXED
    px = ctx.proxy(start=False, workers="2")
    through(px, nofile=(limit, limit))
    start(ctx, px)
    ctx.check("max_sessions lowered to 16, what the workers fit together" in px.stderr(),
              f"stderr: {px.stderr()[-300:]!r}")
    cs = [ctx.raw(px.port) for _ in range(24)]
    ctx.require(harness.wait_until(lambda: len(px.events.find("connect")) +
                                   len(px.events.find("refused")) >= 24, 5),
                "not every connection was answered")
    n = len(px.events.find("connect"))
    refused = px.events.find("refused")
    ctx.check(9 <= n <= 16, f"{n} sessions (each worker fits 8)")
    ctx.check(len(refused) == 24 - n and all(e.get("rule") == "max_sessions" for e in refused),
              f"refused: {refused}")
    ctx.check("out of file descriptors" not in px.stderr(), "a worker ran out of descriptors")
    for c in cs:
        c.close()


@case("workers_redis")
def workers_redis(ctx):
    """shared_state with two workers: each worker is its own instance in
    Redis (its own connection and id: two registrations, two up events
    with different ids); auth_failures 3/60 still holds across the
    workers through Redis; SIGTERM removes both registrations."""
    from cases_shared import redis
    r = redis(ctx)
    px = workers_proxy(ctx, shared_state=r.url(), auth_failures="3/60")
    ctx.require(harness.wait_until(lambda: len(px.events.find("shared_state", state="up")) == 2, 5),
                f"up events: {px.events.find('shared_state')}")
    ids = {e["instance"] for e in px.events.find("shared_state", state="up")}
    ctx.check(len(ids) == 2, f"instance ids {ids}")
    key = "xmpp-inspect:instances:all"
    ctx.check(harness.wait_until(lambda: r.cli("ZCARD", key) == "2", 3),
              f"registrations: {r.cli('ZRANGE', key, '0', '-1')}")
    held = []
    got = parallel(8, lambda i: attempt(ctx, px.port, WRONG, hold=held))
    ctx.check(len(px.events.find("auth_result", by="upstream")) == 3,
              f"{len(px.events.find('auth_result', by='upstream'))} reached the server: {got}")
    for c in held:
        c.close()
    harness.wait_until(lambda: len(px.events.find("close")) >= 8, 5)
    px.stop()
    ctx.check(r.cli("ZCARD", key) == "0", f"registrations left: {r.cli('ZRANGE', key, '0', '-1')}")
