"""shared_state (issue 13, part 2): auth_failures and max_per_addr kept in
a real Redis (Debian's redis-server, a private one per case on a free port
or a private UNIX socket, no persistence), shared by two proxy instances
in front of one Prosody behind one real HAProxy (mode tcp, roundrobin), so
that a client spread over both instances meets one limit, not one each.

Without a PROXY header every client arrives from HAProxy's own address
(127.0.0.1): one address, which is what the limits count in most cases
here; shared_real_addresses has HAProxy send PROXY v2 headers.

  shared_brute_force_spread    auth_failures 3/60: wrong passwords through
                               HAProxy alternate between the instances;
                               3 reach Prosody in total, not 6
  shared_real_addresses        HAProxy with send-proxy-v2 (listen ... proxy):
                               the limit is per real client (127.0.0.2 is
                               stopped, 127.0.0.3 logs in)
  shared_brute_force_parallel  ... 12 attempts at once over both: the
                               check-and-reserve script lets 3 through
  shared_max_per_addr          max_per_addr 3 across both instances; every
                               key in Redis has a TTL (a killed instance
                               leaves nothing forever)
  shared_redis_down_open       Redis killed mid-run and restarted: logins
                               go on (local counts), one "down", one "up";
                               xmpp_inspect_shared_state_up 1, 0, 1
  shared_redis_down_closed     ... closed: temporary-auth-failure while it
                               is down (rule shared_state_fail), logins
                               again once it is back
  shared_redis_stuck           a Redis that is stopped (SIGSTOP) and a raw
                               server that accepts and never answers: the
                               bounded wait (0.5 s) is hit, logins go on
                               (open) or are refused (closed)
  shared_unix_socket_reload    unix:///PATH?db=N; keys in that database;
                               SIGHUP to another Redis: "off", then "up"
  shared_scram_pipelined       SCRAM waits twice and succeeds; what a client
                               pipelines behind an attempt meets the same
                               as without shared state
  shared_conf_check            -t: the URL forms and the bad ones
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path

import harness
import raw
from cases import USERS, WRONG, case, plain_attempt, sids

ALICE_PW = USERS["alice"]


# ------------------------------------------------------------ the parts


class Redis:
    """A private redis-server: no persistence, a free port (or a private
    UNIX socket only), killed by its PID."""

    def __init__(self, unix=False, port=None):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(self.binary, os.X_OK):
            raise harness.ServerUnavailable("redis-server not installed (tools/deps installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="xi-redis-"))
        self.unix = unix
        self.port = 0 if unix else (port or harness.free_port())
        self.socket = self.dir / "redis.sock"
        self.proc = None

    def start(self, timeout=10.0):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--daemonize", "no", "--loglevel", "warning"]
        if self.unix:
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        self._log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        ok = harness.wait_until(lambda: self.cli("PING") == "PONG" or self.proc.poll() is not None,
                                timeout)
        if not ok or self.proc.poll() is not None:
            raise harness.HarnessError(f"redis-server did not start: {harness.tail(self.dir / 'redis.log')}")
        return self

    def url(self, db=0):
        if self.unix:
            return f"unix://{self.socket}?db={db}"
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cli(self, *args, db=0):
        where = ["-s", str(self.socket)] if self.unix else ["-h", "127.0.0.1", "-p", str(self.port)]
        try:
            r = subprocess.run(["redis-cli", *where, "-n", str(db), *args], capture_output=True,
                               text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    def keys(self, db=0):
        out = self.cli("--scan", "--pattern", "xmpp-inspect:*", db=db)
        return sorted(out.split()) if out else []

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def pause(self, on):
        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Balancer:
    """A private HAProxy in TCP mode, roundrobin over backend ports (no
    PROXY header: each instance sees HAProxy's address)."""

    def __init__(self, backends, send_proxy=False):
        self.send_proxy = send_proxy
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(self.binary, os.X_OK):
            raise harness.ServerUnavailable("haproxy not installed (tools/deps installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="xi-balancer-"))
        self.port = harness.free_port()
        self.backends = backends
        self.proc = None

    def start(self, timeout=10.0):
        cfg = ["global", "    maxconn 500", "defaults", "    mode tcp",
               "    timeout connect 5s", "    timeout client 30s", "    timeout server 30s",
               "frontend fe", f"    bind 127.0.0.1:{self.port}", "    default_backend be",
               "backend be", "    balance roundrobin"]
        cfg += [f"    server px{i} 127.0.0.1:{p}" + (" send-proxy-v2" if self.send_proxy else "")
                for i, p in enumerate(self.backends)]
        (self.dir / "haproxy.cfg").write_text("\n".join(cfg) + "\n")
        self._log = open(self.dir / "haproxy.log", "wb")
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.dir / "haproxy.cfg")],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        harness.wait_listening([self.port], timeout, self.proc, "haproxy")
        return self

    def stop(self):
        if self.proc is not None:
            harness.stop_process(self.proc, timeout=5.0)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Silent:
    """A raw TCP server that accepts and never answers (a Redis that is
    stuck before its first reply)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


class _Stop:
    """Something the runner's teardown does not know: stopped by the case."""

    def __init__(self, fn):
        self.stop = fn


def redis(ctx, **kw):
    return ctx.server(lambda: Redis(**kw), "redis-server")


def two_behind_haproxy(ctx, r, send_proxy=False, **conf):
    """Two proxies sharing r, and one HAProxy over both (with send_proxy,
    a PROXY v2 header toward listeners marked proxy)."""
    pxs = []
    for _ in range(2):
        if send_proxy:
            conf["proxy_from"] = "127.0.0.1/32"
        px = ctx.proxy(shared_state=r.url(), start=False, **conf)
        if send_proxy:
            px.keys["listen"] += " proxy"
        try:
            px.start()
        except harness.HarnessError as e:
            ctx.require(False, f"proxy did not start: {e}")
        pxs.append(px)
    for px in pxs:
        ctx.require(px.events.wait("shared_state", 5, state="up"),
                    "no shared_state up event at start")
    lb = ctx.server(lambda: Balancer([px.port for px in pxs], send_proxy=send_proxy), "haproxy")
    return pxs, lb


def attempt(ctx, port, password, timeout=5.0, source=None):
    return plain_attempt(ctx, port, password, timeout=timeout, source=source)


def gauge(port):
    """xmpp_inspect_shared_state_up from a scrape of /metrics, or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = b""
        while chunk := s.recv(65536):
            text += chunk
        s.close()
    except OSError:
        return None
    for line in text.decode("utf-8", "replace").splitlines():
        if line.startswith("xmpp_inspect_shared_state_up "):
            return int(line.split()[1])
    return None


def all_events(pxs, event, **fields):
    return [e for px in pxs for e in px.events.read() if harness.match(e, event, **fields)]


# ------------------------------------------------------------ cases


@case("shared_brute_force_spread")
def shared_brute_force_spread(ctx):
    """auth_failures = 3/60 on two instances sharing one Redis behind
    HAProxy (roundrobin): 7 wrong passwords one after the other land on
    both instances in turn; 3 reach Prosody in total (not 3 per instance),
    the others are refused by the proxy with temporary-auth-failure (rule
    auth_failures); the right password is refused as well. Redis holds
    the window with its TTL."""
    r = redis(ctx)
    pxs, lb = two_behind_haproxy(ctx, r, auth_failures="3/60")
    answers = [attempt(ctx, lb.port, WRONG) for _ in range(7)]
    answers.append(attempt(ctx, lb.port, ALICE_PW))
    ctx.note(f"answers: {answers}")
    ctx.check(answers[:3] == ["not-authorized"] * 3, f"the first three: {answers[:3]}")
    ctx.check(answers[3:] == ["temporary-auth-failure"] * 5, f"after three failures: {answers[3:]}")
    for px in pxs:
        harness.wait_until(lambda: len(sids(px.events.read())) ==
                           len([e for e in px.events.read() if e.get("event") == "close"]), 5)
    upstream = all_events(pxs, "auth_result", by="upstream")
    ctx.check(len(upstream) == 3, f"{len(upstream)} attempts reached Prosody, want 3 in total")
    per = [len(sids(px.events.read())) for px in pxs]
    ctx.check(min(per) >= 3, f"sessions per instance {per}: the balancer did not spread them")
    refused = all_events(pxs, "policy", rule="auth_failures", action="reject")
    ctx.check(len(refused) == 5 and all("across the instances" in e.get("detail", "") for e in refused),
              f"policy auth_failures events: {refused}")
    ctx.check(all(len(all_events([px], "policy", rule="auth_failures")) >= 2 for px in pxs),
              "each instance refused some (the limit is one across both)")
    ttl = r.cli("PTTL", "xmpp-inspect:fail:127.0.0.1")
    count = r.cli("GET", "xmpp-inspect:fail:127.0.0.1")
    ctx.check(count == "3", f"Redis failure counter {count!r}, want 3")
    ctx.check(ttl is not None and 0 < int(ttl) <= 60000, f"failure window TTL {ttl!r} ms")


@case("shared_real_addresses")
def shared_real_addresses(ctx):
    """Behind HAProxy with send-proxy-v2 (listen ... proxy, proxy_from),
    both instances see each client's own address, and the shared limit is
    per client: 5 wrong passwords from 127.0.0.2 spread over both are
    stopped after 3 in total, while 127.0.0.3 logs in; Redis counts
    127.0.0.2, never the balancer's address."""
    r = redis(ctx)
    pxs, lb = two_behind_haproxy(ctx, r, send_proxy=True, auth_failures="3/60")
    answers = [attempt(ctx, lb.port, WRONG, source="127.0.0.2") for _ in range(5)]
    ctx.check(answers == ["not-authorized"] * 3 + ["temporary-auth-failure"] * 2,
              f"127.0.0.2: {answers}")
    ctx.check(attempt(ctx, lb.port, ALICE_PW, source="127.0.0.3") == "success",
              "127.0.0.3 is not limited by 127.0.0.2's failures")
    conns = all_events(pxs, "connect")
    ctx.check(all(str(e.get("peer", "")).startswith(("127.0.0.2:", "127.0.0.3:")) and e.get("via")
                  for e in conns), f"connect events: {conns}")
    ctx.check(all(len(all_events([px], "connect")) >= 2 for px in pxs), "both instances served")
    ctx.check(r.cli("GET", "xmpp-inspect:fail:127.0.0.2") == "3", f"Redis keys: {r.keys()}")
    ctx.check(r.cli("EXISTS", "xmpp-inspect:fail:127.0.0.1") == "0", "the balancer's address counted")


@case("shared_brute_force_parallel")
def shared_brute_force_parallel(ctx):
    """auth_failures = 3/60, two instances behind HAProxy: 12 clients do
    STARTTLS, then all send a wrong password at the same moment. Redis
    judges each attempt in one script, so at most 3 reach Prosody across
    both instances (the rest: temporary-auth-failure)."""
    r = redis(ctx)
    pxs, lb = two_behind_haproxy(ctx, r, auth_failures="3/60")
    clients = []
    for _ in range(12):
        c = ctx.raw(lb.port)
        c.open_stream()
        c.starttls()
        c.open_stream()
        clients.append(c)
    for c in clients:
        c.auth("PLAIN", raw.plain_payload("alice", WRONG))
    answers = []
    for c in clients:
        el = c.next_element(timeout=5)
        answers.append(raw.sasl_condition(el) if el is not None and raw.local(el.tag) == "failure"
                       else c.describe(el))
    ctx.note(f"answers: {answers}")
    ctx.check(answers.count("not-authorized") <= 3 and answers.count("not-authorized") >= 1,
              f"{answers.count('not-authorized')} wrong passwords reached Prosody, want 1 to 3")
    ctx.check(answers.count("not-authorized") + answers.count("temporary-auth-failure") == 12,
              f"answers: {answers}")
    for c in clients:
        c.close()
    harness.wait_until(lambda: len(all_events(pxs, "close")) == 12, 5)
    ctx.check(len(all_events(pxs, "auth_result", by="upstream")) <= 3,
              "more than 3 attempts reached the server")
    inflight = r.cli("ZCARD", "xmpp-inspect:inflight:127.0.0.1")
    ctx.check(inflight == "0", f"attempts still in flight in Redis: {inflight!r}")


@case("shared_max_per_addr")
def shared_max_per_addr(ctx):
    """max_per_addr = 3 on two instances behind HAProxy: three sessions
    held open (over both instances), the fourth and fifth are closed at
    once with a policy event max_per_addr (the instance that took them had
    only one or two of its own); once one session closes a new one is let
    in. Every key in Redis has a TTL; after SIGKILL of an instance with
    sessions open its count is still bounded by that TTL (15 s)."""
    r = redis(ctx)
    pxs, lb = two_behind_haproxy(ctx, r, max_per_addr="3")
    held = []
    for _ in range(3):
        c = ctx.raw(lb.port)
        c.open_stream()
        held.append(c)
    refused = []
    for _ in range(2):
        c = ctx.raw(lb.port)
        c.send(raw.header())
        refused.append(c.next_element(timeout=3) is None and c.wait_closed(3))
    ctx.check(all(refused), f"the 4th and 5th sessions were not closed at once: {refused}")
    # the event logs are written by their threads: wait for the lines
    harness.wait_until(lambda: len(all_events(pxs, "close", reason="max_per_addr")) >= 2, 5)
    pol = all_events(pxs, "policy", rule="max_per_addr", action="reject")
    ctx.check(len(pol) == 2, f"policy max_per_addr events: {pol}")
    ctx.check(len(all_events(pxs, "close", reason="max_per_addr")) == 2,
              "the refused sessions' close reason is max_per_addr")
    held.pop(0).close()
    ok = harness.wait_until(lambda: r.cli("EVAL", "local t=0 for _,k in ipairs(redis.call('KEYS',"
                                          "'xmpp-inspect:sessions:*')) do t=t+tonumber(redis.call("
                                          "'HGET',k,'127.0.0.1') or '0') end return t", "0") == "2", 5)
    ctx.check(ok, "the closed session was not given back in Redis")
    c = ctx.raw(lb.port)
    try:
        c.open_stream()
        held.append(c)
    except AssertionError as e:
        ctx.check(False, f"after one closed, a new session was refused: {e}")
    keys = r.keys()
    # an instance is a worker (workers = N: each its own link and id), and
    # has a sessions hash while it holds sessions: one hash per instance
    # holding some, from both proxies, every one of a registered instance
    hashes = {k[len("xmpp-inspect:sessions:"):] for k in keys
              if k.startswith("xmpp-inspect:sessions:")}
    registered = set((r.cli("ZRANGE", "xmpp-inspect:instances:all", "0", "-1") or "").split())
    ctx.check(len(registered) == sum(p.workers() for p in pxs),
              f"instances registered: {registered}, workers {[p.workers() for p in pxs]}")
    ctx.check(2 <= len(hashes) <= len(registered) and hashes <= registered,
              f"one sessions hash per instance holding sessions: {keys}")
    for k in keys:
        ttl = r.cli("PTTL", k)
        ctx.check(ttl is not None and 0 < int(ttl) <= 15000, f"key {k} TTL {ttl!r} ms (want 1..15000)")
    # an instance killed with sessions open: its count expires with its key
    victim = pxs[0]
    inst = victim.events.find("shared_state", state="up")[0]["instance"]
    victim.proc.kill()
    victim.proc.wait(timeout=5)
    victim.exit_status = 0  # killed on purpose
    ttl = r.cli("PTTL", f"xmpp-inspect:sessions:{inst}")
    ctx.check(ttl is not None and (int(ttl) == -2 or 0 < int(ttl) <= 15000),
              f"the killed instance's sessions key TTL {ttl!r}")
    for c in held:
        c.close()


def outage_case(ctx, mode):
    r = redis(ctx)
    # one instance's outage and recovery events (with workers = N each worker
    # is an instance with its own link, each saying its own: cases_workers)
    px = ctx.proxy(shared_state=r.url(), shared_state_fail=mode, auth_failures="5/60",
                   workers="1")
    # without auth_failures only max_per_addr is shared: closed still
    # refuses logins while it cannot be judged
    mport = harness.free_port()
    px2 = ctx.proxy(shared_state=r.url(), shared_state_fail=mode,
                    metrics_listen=f"127.0.0.1:{mport}", workers="1")
    for p in (px, px2):
        ctx.require(p.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    ctx.check(attempt(ctx, px.port, ALICE_PW) == "success", "login with Redis up")
    ctx.check(attempt(ctx, px2.port, ALICE_PW) == "success", "login with Redis up (no auth_failures)")
    ctx.check(gauge(mport) == 1, f"xmpp_inspect_shared_state_up with Redis up: {gauge(mport)}")
    port = r.port
    r.kill()
    ctx.require(px2.events.wait("shared_state", 5, state="down"), "no down event (no auth_failures)")
    ctx.check(gauge(mport) == 0, f"xmpp_inspect_shared_state_up while down: {gauge(mport)}")
    got = attempt(ctx, px2.port, ALICE_PW)
    ctx.check(got == ("success" if mode == "open" else "temporary-auth-failure"),
              f"{mode}, no auth_failures, Redis down: {got}")
    during = [attempt(ctx, px.port, ALICE_PW) for _ in range(3)]
    ctx.note(f"during the outage: {during}")
    want = "success" if mode == "open" else "temporary-auth-failure"
    ctx.check(during == [want] * 3, f"{mode}: logins while Redis is down: {during}, want {want}")
    down = px.events.find("shared_state", state="down")
    ctx.check(len(down) == 1, f"one down event per outage: {down}")
    ctx.check(down and down[0].get("mode") == mode and down[0].get("reason"),
              f"the down event says the mode and why: {down}")
    if mode == "closed":
        pol = px.events.find("policy", rule="shared_state_fail", action="reject")
        ctx.check(len(pol) == 3, f"policy shared_state_fail events: {pol}")
        ctx.check(len(px.events.find("auth_result", by="upstream")) == 1,
                  "a refused login reached the server")
    # back on the same port: reconnected within the back-off (at most 5 s)
    r2 = Redis(port=port)
    ctx.servers.append(r2)
    r2.start()
    up = harness.wait_until(lambda: len(px.events.find("shared_state", state="up")) >= 2, 8)
    ctx.require(up, "no shared_state up event after Redis came back")
    ups = px.events.find("shared_state", state="up")
    ctx.check(len(ups) == 2 and ups[1].get("outage_ms", 0) > 0 and ups[1].get("lookups_failed", 0) >= 3,
              f"the recovery event: {ups}")
    ctx.check(attempt(ctx, px.port, ALICE_PW) == "success", "login after Redis is back")
    ctx.check(harness.wait_until(lambda: gauge(mport) == 1, 8),
              f"xmpp_inspect_shared_state_up once back: {gauge(mport)}")
    ctx.check(attempt(ctx, px.port, WRONG) == "not-authorized", "a wrong password after")
    ctx.check(harness.wait_until(lambda: r2.cli("GET", "xmpp-inspect:fail:127.0.0.1") == "1", 3),
              "the failure after the outage is counted in the new Redis")
    ctx.check(len(px.events.find("shared_state", state="down")) == 1, "still one down event")


@case("shared_redis_down_open")
def shared_redis_down_open(ctx):
    """shared_state_fail = open: Redis killed mid-run, logins go on with
    the local counts and one shared_state down event (mode open, a
    reason); Redis back on its port: one up event (outage_ms,
    lookups_failed), and failures are counted there again."""
    outage_case(ctx, "open")


@case("shared_redis_down_closed")
def shared_redis_down_closed(ctx):
    """shared_state_fail = closed: while Redis is down each login gets
    <temporary-auth-failure/> from the proxy (policy shared_state_fail,
    never relayed); once it is back logins work again."""
    outage_case(ctx, "closed")


@case("shared_redis_stuck")
def shared_redis_stuck(ctx):
    """A Redis that stops answering (SIGSTOP): the login waiting for it is
    answered after the bounded wait (0.5 s; open: it goes on), with one
    down event that says so; SIGCONT: up again. A raw server that accepts
    and never answers, closed mode: the login is refused with
    temporary-auth-failure within the bounded wait, never hangs."""
    r = redis(ctx)
    # one instance's down event (each worker would say its own)
    px = ctx.proxy(shared_state=r.url(), auth_failures="5/60", workers="1")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    r.pause(True)
    t0 = time.monotonic()
    got = attempt(ctx, px.port, ALICE_PW)
    took = time.monotonic() - t0
    ctx.check(got == "success", f"open, Redis stuck: {got}")
    down = px.events.find("shared_state", state="down")
    ctx.check(len(down) == 1 and "no answer" in down[0].get("reason", ""), f"down event: {down}")
    ctx.check(took < 3.0, f"the login took {took:.2f} s")
    r.pause(False)
    ctx.check(harness.wait_until(lambda: len(px.events.find("shared_state", state="up")) >= 2, 8),
              "no up event after SIGCONT")

    silent = Silent()
    ctx.servers.append(_Stop(silent.stop))
    px2 = ctx.proxy(shared_state=f"redis://127.0.0.1:{silent.port}", shared_state_fail="closed",
                    auth_failures="5/60", workers="1")
    t0 = time.monotonic()
    got = attempt(ctx, px2.port, ALICE_PW)
    took = time.monotonic() - t0
    ctx.check(got == "temporary-auth-failure", f"closed, Redis silent: {got}")
    ctx.check(took < 3.0, f"the refusal took {took:.2f} s")
    down = px2.events.find("shared_state", state="down")
    ctx.check(len(down) == 1 and "no answer" in down[0].get("reason", ""), f"down event: {down}")
    ctx.check(not px2.events.find("shared_state", state="up"), "an up event from a silent server")
    ctx.check(px2.events.find("policy", rule="shared_state_fail"), "no policy shared_state_fail event")
    # SIGTERM while a session waits for its admission (the silent server
    # is connected to again after the back-off, at most 5 s)
    n = len(silent.conns)
    ok = harness.wait_until(lambda: len(silent.conns) > n, 8, interval=0.01)
    c = ctx.raw(px2.port)
    time.sleep(0.1)
    status = px2.stop()
    ctx.check(ok and status == 0, f"SIGTERM with an admission pending: exit {status} (reconnected: {ok})")
    ctx.check(c.wait_closed(3), "the waiting client was not closed")
    last = [e for e in px2.events.read() if e.get("sid") == sids(px2.events.read())[-1]]
    ctx.check([e["event"] for e in last] == ["connect", "close"] and
              last[-1].get("reason") == "proxy shutting down",
              f"the session waiting for its admission: {last}")


@case("shared_unix_socket_reload")
def shared_unix_socket_reload(ctx):
    """shared_state = unix:///PATH?db=3: a failure is counted in database 3
    of the Redis on that socket (with its window as TTL), none in 0.
    SIGHUP with shared_state on another Redis (TCP): shared_state off
    (reason reload), then up on the new one, which then counts."""
    r = redis(ctx, unix=True)
    px = ctx.proxy(shared_state=r.url(db=3), auth_failures="4/30")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    ctx.check(attempt(ctx, px.port, WRONG) == "not-authorized", "a wrong password")
    ctx.check(harness.wait_until(lambda: r.cli("GET", "xmpp-inspect:fail:127.0.0.1", db=3) == "1", 3),
              f"the failure in db 3: {r.keys(db=3)}")
    ttl = r.cli("PTTL", "xmpp-inspect:fail:127.0.0.1", db=3)
    ctx.check(ttl is not None and 0 < int(ttl) <= 30000, f"window TTL {ttl!r}")
    ctx.check(not r.keys(db=0), f"keys in db 0: {r.keys(db=0)}")
    r2 = redis(ctx)
    px.reload(shared_state=r2.url())
    ctx.check(px.events.wait("shared_state", 5, state="off", reason="reload"), "no off event at reload")
    ctx.check(px.events.wait("shared_state", 5, state="up", server=r2.url()),
              "no up event on the new Redis")
    ctx.check(attempt(ctx, px.port, WRONG) == "not-authorized", "a wrong password after reload")
    ctx.check(harness.wait_until(lambda: r2.cli("GET", "xmpp-inspect:fail:127.0.0.1") == "1", 3),
              "the failure counted in the new Redis")


@case("shared_conf_check", prosody=None)
def shared_conf_check(ctx):
    """xmpp-inspect -t accepts the URL forms and refuses the bad ones with
    file:line."""
    good = ["redis://127.0.0.1", "redis://localhost:6380/2", "redis://[::1]:6379/0",
            "unix:///run/redis/redis.sock", "unix:///tmp/r.sock?db=5"]
    bad = ["redis://", "redis://h:0", "redis://h:70000", "redis://h/x", "redis://u:p@h",
           "redis://[::1", "unix://relative", "unix:///s?x=1", "http://h", "redis://h/65536"]
    base = Path(tempfile.mkdtemp(prefix="xi-shared-conf-"))
    tls = f"cert = {harness.CERTS / 'server.pem'}\nkey = {harness.CERTS / 'server.key'}\n"
    try:
        for i, url in enumerate(good + bad):
            conf = base / f"c{i}.conf"
            conf.write_text(f"listen = 127.0.0.1:1\nupstream = 127.0.0.1:2\nupstream_tls = none\n"
                            f"require_tls = no\nshared_state = {url}\nshared_state_fail = closed\n" + tls)
            r = ctx.run_bin(["-t", "-c", str(conf)])
            if url in good:
                ctx.check(r.returncode == 0, f"{url}: refused: {r.stderr.strip()}")
            else:
                ctx.check(r.returncode == 1 and f"c{i}.conf:5: shared_state" in r.stderr,
                          f"{url}: want an error at line 5, got {r.returncode} {r.stderr.strip()!r}")
        conf = base / "f.conf"
        conf.write_text("listen = 127.0.0.1:1\nupstream = 127.0.0.1:2\nupstream_tls = none\n"
                        "require_tls = no\nshared_state_fail = maybe\n" + tls)
        r = ctx.run_bin(["-t", "-c", str(conf)])
        ctx.check(r.returncode == 1 and "f.conf:5" in r.stderr and "open or closed" in r.stderr,
                  f"shared_state_fail = maybe: {r.stderr.strip()!r}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@case("shared_scram_pipelined")
def shared_scram_pipelined(ctx):
    """The pause while Redis judges an attempt: a SCRAM-SHA-1 login
    (slixmpp) waits twice (its client-first and its proof) and succeeds.
    Raw clients that pipeline bytes behind a PLAIN <auth> in one write
    (whitespace and a second <auth>; a keepalive and <abort/>) get from
    the proxy with shared state exactly what they get from one without:
    what came behind the attempt waited in the parser, neither lost nor
    judged before it."""
    r = redis(ctx)
    px = ctx.proxy(shared_state=r.url(), auth_failures="5/60")
    plain = ctx.proxy(auth_failures="5/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    res = ctx.client(px.port, mech="SCRAM-SHA-1")
    ctx.check(res.get("ok"), f"SCRAM-SHA-1 login: {res}")
    ns = "urn:ietf:params:xml:ns:xmpp-sasl"
    wrong = f"<auth xmlns='{ns}' mechanism='PLAIN'>{raw.plain_payload('alice', WRONG)}</auth>"
    right = f"<auth xmlns='{ns}' mechanism='PLAIN'>{raw.plain_payload('alice', ALICE_PW)}</auth>"
    for name, data in (("second auth", wrong + " \n " + right), ("abort", right + " <abort xmlns='" + ns + "'/>")):
        seen = []
        for p in (px, plain):
            c = ctx.raw(p.port)
            c.open_stream()
            c.starttls()
            c.open_stream()
            c.send(data)
            got = []
            for _ in range(3):
                el = c.next_element(timeout=2)
                if el is None:
                    got.append("end" if (c.eof or c.stream_closed) else "nothing")
                    break
                tag = raw.local(el.tag)
                got.append(tag + (":" + raw.sasl_condition(el) if tag == "failure" else "")
                           + (":" + str(raw.stream_error_condition(el)) if tag == "error" else ""))
            seen.append(got)
            c.close()
        ctx.note(f"{name}: shared {seen[0]}, local {seen[1]}")
        if ctx.runner.verbose:
            print(f"    {name}: shared {seen[0]}, local {seen[1]}", file=sys.stderr)
        ctx.check(seen[0] == seen[1], f"{name}: with shared state {seen[0]}, without {seen[1]}")
        ctx.check(seen[0] and seen[0][0] != "nothing", f"{name}: the proxy said nothing")
    for p in (px, plain):
        ctx.check(harness.wait_until(lambda: all_events([p], "close") and
                                     len(all_events([p], "close")) == len(sids(p.events.read())), 5),
                  "every session ended")
