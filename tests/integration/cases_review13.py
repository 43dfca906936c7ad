"""Regressions from the hostile review of issue 13 (PROXY headers in,
shared state in Redis, metrics). The Redis here is mostly FakeRedis, a raw
RESP server that answers the proxy's scripts as Redis would, except where
a case makes it hostile; review13_reload_back uses real redis-servers.

  review13_redis_unsolicited        one reply more than asked for (hiredis
                                    0.14 asserted: the proxy aborted); now
                                    a failure of the link, logins go on
  review13_redis_array_bomb         a lookup answered with a multi-bulk of
                                    2^31-1 elements (allocated whole, freed
                                    one by one: the loop stalled for
                                    seconds); now refused as it is read
  review13_sigterm_attempt_pending  SIGTERM while an attempt waits for a
                                    Redis that answers after the session is
                                    gone: a clean exit (ASan: no use after
                                    free)
  review13_sighup_attempt_pending   SIGHUP to another Redis while an attempt
                                    waits: answered down at once, the login
                                    goes on (open)
  review13_reload_back              SIGHUP from Redis A to B and back: A no
                                    longer holds the first registration (an
                                    open session was counted twice and
                                    max_per_addr refused a client)
  review13_down_after_wait_local_limit
                                    six wrong passwords waiting together for
                                    a Redis that stops answering, all
                                    answered down: the local auth_failures
                                    (3) is checked again, at most 3 reach
                                    the server (all 6 did)
"""

import socket
import threading
import time

import harness
import raw
from cases import USERS, WRONG, case
from cases_shared import _Stop, attempt

ALICE_PW = USERS["alice"]


class FakeRedis:
    """A raw RESP server: answers every command as a good Redis would for
    the proxy's scripts, except what hostile() returns for the n-th EVAL of
    a lookup (a list of bytes to send instead)."""

    def __init__(self, hostile=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.commands = []
        self.hostile = hostile
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _commands(buf):
        """Complete RESP commands at the front of buf, and the rest."""
        out = []
        while True:
            if not buf.startswith(b"*"):
                return out, buf
            eol = buf.find(b"\r\n")
            if eol < 0:
                return out, buf
            n = int(buf[1:eol])
            pos, args = eol + 2, []
            for _ in range(n):
                e = buf.find(b"\r\n", pos)
                if e < 0:
                    return out, buf
                ln = int(buf[pos + 1:e])
                if len(buf) < e + 2 + ln + 2:
                    return out, buf
                args.append(buf[e + 2:e + 2 + ln])
                pos = e + 2 + ln + 2
            out.append(args)
            buf = buf[pos:]

    def _answer(self, args):
        cmd = args[0].upper()
        if cmd != b"EVAL":
            return [b"+OK\r\n" if cmd == b"SELECT" else b":1\r\n"]
        script = args[1]
        if b"#ARGV - 2" in script or b"return 1" in script and b"HGET" not in script:
            return [b":0\r\n"]  # resync, heartbeat
        if b"ZCARD" in script or b"HGET" in script:  # attempt, admit
            lookups = [a for a in self.commands if a[0].upper() == b"EVAL" and
                       (b"ZCARD" in a[1] or b"HGET" in a[1])]
            if self.hostile is not None:
                got = self.hostile(len(lookups), args)
                if got is not None:
                    return got
            return [b"*2\r\n:1\r\n:0\r\n"]
        return [b":1\r\n"]

    def _serve(self, c):
        buf = b""
        while not self.stopped:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            cmds, buf = self._commands(buf)
            for args in cmds:
                self.commands.append(args)
                try:
                    for chunk in self._answer(args):
                        c.sendall(chunk)
                except OSError:
                    return

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def fake_redis(ctx, hostile):
    f = FakeRedis(hostile)
    ctx.servers.append(_Stop(f.stop))
    return f


@case("review13_redis_unsolicited")
def review13_redis_unsolicited(ctx):
    """One reply more than asked: the proxy must not abort (hiredis 0.14
    asserts when a reply finds no callback in a plain context)."""
    f = fake_redis(ctx, lambda n, args: [b"*2\r\n:1\r\n:0\r\n+OK\r\n"] if n == 1 else None)
    px = ctx.proxy(shared_state=f.url(), auth_failures="5/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    got = attempt(ctx, px.port, ALICE_PW)
    ctx.check(got == "success", f"the login behind the extra reply: {got}")
    time.sleep(0.3)
    ctx.check(px.alive(), f"the proxy died: {harness.tail(px.stderr_path)}")
    down = px.events.find("shared_state", state="down")
    ctx.check(len(down) == 1 and "no command" in down[0].get("reason", ""),
              f"the extra reply is a failure of the link: {down}")
    ctx.check(attempt(ctx, px.port, ALICE_PW) == "success", "a login after it")
    ctx.check(px.alive(), "the proxy died on the second login")


@case("review13_redis_array_bomb")
def review13_redis_array_bomb(ctx):
    """A lookup answered with a multi-bulk of 2^31-1 elements (then
    nothing): a protocol error at once, not 16 GiB asked of malloc nor a
    wait for elements that never come."""
    f = fake_redis(ctx, lambda n, args: [b"*2147483647\r\n:1\r\n"] if n == 1 else None)
    px = ctx.proxy(shared_state=f.url(), auth_failures="5/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    got = attempt(ctx, px.port, ALICE_PW)
    ctx.check(got == "success", f"open: the login goes on: {got}")
    ctx.check(px.alive(), f"the proxy died: {harness.tail(px.stderr_path)}")
    down = px.events.find("shared_state", state="down")
    ctx.check(len(down) == 1 and "longer" in down[0].get("reason", ""),
              f"refused as a protocol error, not by the timeout: {down}")


def slow_attempts(delay):
    """hostile(): attempts answered YES after delay seconds."""
    def hostile(n, args):
        if b"ZCARD" in args[1]:
            time.sleep(delay)
        return None
    return hostile


def auth_pending(ctx, port):
    """A raw client whose PLAIN <auth> is sent (it waits for Redis)."""
    c = ctx.raw(port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("PLAIN", raw.plain_payload("alice", ALICE_PW))
    return c


@case("review13_sigterm_attempt_pending")
def review13_sigterm_attempt_pending(ctx):
    """SIGTERM while an attempt waits for Redis, whose answer (YES, a
    reservation) comes after the session is gone: a clean exit (the ASan
    binary finds no use after free), the client told."""
    f = fake_redis(ctx, slow_attempts(0.3))
    px = ctx.proxy(shared_state=f.url(), auth_failures="5/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    c = auth_pending(ctx, px.port)
    ctx.require(harness.wait_until(lambda: any(b"ZCARD" in a[1] for a in f.commands
                                               if a[0] == b"EVAL"), 3), "no attempt lookup")
    status = px.stop()
    ctx.check(status == 0, f"exit status {status}: {harness.tail(px.stderr_path)}")
    ctx.check(c.wait_closed(3), "the waiting client was not closed")


@case("review13_sighup_attempt_pending")
def review13_sighup_attempt_pending(ctx):
    """SIGHUP to another Redis while an attempt waits for the first: the
    attempt is answered DOWN at once (open: it goes on, the login
    succeeds), the late answer of the old Redis finds nothing."""
    f = fake_redis(ctx, slow_attempts(0.4))
    f2 = fake_redis(ctx, None)
    px = ctx.proxy(shared_state=f.url(), auth_failures="5/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    c = auth_pending(ctx, px.port)
    ctx.require(harness.wait_until(lambda: any(b"ZCARD" in a[1] for a in f.commands
                                               if a[0] == b"EVAL"), 3), "no attempt lookup")
    px.reload(shared_state=f2.url())
    el = c.next_element(timeout=3)
    ctx.check(el is not None and raw.local(el.tag) == "success", f"the login: {c.describe(el)}")
    c.close()
    ctx.check(px.events.find("shared_state", state="off", reason="reload"), "no off event")
    time.sleep(0.5)
    ctx.check(px.alive(), f"the proxy died: {harness.tail(px.stderr_path)}")
    ctx.check(px.stop() == 0, "exit status")


@case("review13_reload_back")
def review13_reload_back(ctx):
    """SIGHUP from Redis A to B and back to A: the instance's first
    registration and session counts in A are removed when it leaves A (they
    lingered SHARED_INSTANCE_TTL_MS, 15 s, so every session open was
    counted twice against max_per_addr after the reload back)."""
    from cases_shared import redis
    a, b = redis(ctx), redis(ctx)
    # one instance's registration (each worker registers its own)
    px = ctx.proxy(shared_state=a.url(), max_per_addr="2", workers="1")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    held = ctx.raw(px.port)  # one session open from 127.0.0.1, counted in A
    held.open_stream()
    key = "xmpp-inspect:instances:all"
    ctx.require(harness.wait_until(lambda: a.cli("ZCARD", key) == "1", 3), "not registered in A")
    px.reload(shared_state=b.url())
    ctx.require(px.events.wait("shared_state", 5, state="up", server=b.url()), "no up on B")
    ctx.check(harness.wait_until(lambda: a.cli("ZCARD", key) == "0", 3),
              f"the registration left behind in A: {a.keys()}")
    px.reload(shared_state=a.url())
    ctx.require(harness.wait_until(lambda: len(px.events.find("shared_state", state="up",
                                                              server=a.url())) >= 2, 5),
                "no up on A again")
    ctx.check(harness.wait_until(lambda: a.cli("ZCARD", key) == "1", 3),
              f"instances registered in A after coming back: {a.cli('ZRANGE', key, '0', '-1')}")
    c = ctx.raw(px.port)  # the second from 127.0.0.1: within max_per_addr 2
    try:
        c.open_stream()
        ok = True
    except AssertionError:
        ok = False
    ctx.check(ok, f"a second session refused: {px.events.find('policy', rule='max_per_addr')}")
    c.close()
    held.close()


@case("review13_down_after_wait_local_limit")
def review13_down_after_wait_local_limit(ctx):
    """auth_failures 3/60, shared_state_fail open, a Redis that stops
    answering attempts: six wrong passwords sent at once all wait for it,
    and are all answered "down" when the bounded wait ends. Open goes on
    with the local counts, which must be checked then (the six were checked
    before, when none was in flight): at most 3 reach the server, the
    others are refused with temporary-auth-failure."""
    f = fake_redis(ctx, slow_attempts(0.8))
    px = ctx.proxy(shared_state=f.url(), auth_failures="3/60")
    ctx.require(px.events.wait("shared_state", 5, state="up"), "no shared_state up at start")
    cs = []
    for _ in range(6):
        c = ctx.raw(px.port)
        c.open_stream()
        c.starttls()
        c.open_stream()
        cs.append(c)
    auth = (f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            f"{raw.plain_payload('alice', WRONG)}</auth>")
    for c in cs:
        c.send(auth)
    answers = []
    for c in cs:
        el = c.next_element(timeout=5)
        answers.append(raw.sasl_condition(el) if el is not None and raw.local(el.tag) == "failure"
                       else c.describe(el))
        c.close()
    ctx.note(f"answers: {answers}")
    ctx.check(answers.count("not-authorized") <= 3 and
              answers.count("not-authorized") + answers.count("temporary-auth-failure") == 6,
              f"six attempts answered down after the wait: {answers}")
