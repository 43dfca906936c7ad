"""The proxy as a daemon (issue 12, parts 4 to 6): systemd, log rotation,
file descriptors.

systemd is not PID 1 here, so the readiness protocol is checked against a
$NOTIFY_SOCKET of the case's own (an AF_UNIX datagram socket, a path or an
abstract name): READY=1 only once the ports accept, RELOADING=1 (with
MONOTONIC_USEC) and READY=1 around each SIGHUP, STOPPING=1 at SIGTERM. The
unit file itself goes through `systemd-analyze verify` and `security`.

Log rotation is the real logrotate with the shipped snippet
(conf/logrotate/xmpp-inspect, its paths and its postrotate turned to the
case's files and proxy), on a private state file, while logins run through
the proxy to Prosody: every login is in the logs once, every line of every
file is whole.

Descriptor limits are set for the proxy alone by starting it through
prlimit(1) (each program execs the next, so the pid the harness signals
is the proxy's).
"""

import gzip
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import harness
import raw
from cases import case, CA, USERS, ALL_PASSWORDS

REPO = harness.REPO
UNIT = REPO / "conf" / "systemd" / "xmpp-inspect.service"
LOGROTATE = REPO / "conf" / "logrotate" / "xmpp-inspect"
# NOFILE_FIXED in src/bounds.h: descriptors besides sessions and listeners
FIXED = int(re.search(r"#define NOFILE_FIXED (\d+)", (REPO / "src" / "bounds.h").read_text()).group(1))
# the harness's proxies have two listeners
NEED_DEFAULT = 2 * 20000 + 2 + FIXED


def through(px, env=None, nofile=None):
    """Makes px start its binary with more environment and/or the
    descriptor limits nofile = (soft, hard), through a script that execs."""
    argv = []
    if nofile:
        argv += ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"]
    if env:
        argv += ["env"] + [f"{k}={v}" for k, v in env.items()]
    argv.append(px.binary)
    script = px.dir / "start.sh"
    script.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n')
    script.chmod(0o700)
    px.binary = str(script)


def start(ctx, px):
    try:
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")


def nofile_limits(pid):
    """(soft, hard) RLIMIT_NOFILE of a running process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    return None


# ================================================================ sd_notify


class NotifySocket:
    """A $NOTIFY_SOCKET as the service manager has it: datagrams received
    by a thread, each with the moment it came. At a READY=1 the thread
    also looks, before anything else, whether the ports of ports are
    listening and take a connection."""

    def __init__(self, directory, abstract=False, ports=()):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"xi-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = Path(directory) / "notify.sock"
            self.sock.bind(str(path))
            self.env = str(path)
        self.sock.settimeout(0.2)
        self.ports = list(ports)
        self.messages = []  # (monotonic seconds, text, [port accepts a connection])
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _accepts(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def _run(self):
        while not self.stopped:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode(errors="replace")
            ready = "READY=1" in text.split("\n")
            accepting = [self._accepts(p) for p in self.ports] if ready else []
            self.messages.append((now, text, accepting))

    def wait(self, n, timeout=5.0):
        """The first n messages, waiting for them until the deadline."""
        harness.wait_until(lambda: len(self.messages) >= n, timeout)
        return self.messages[:n]

    def texts(self):
        return [m[1] for m in self.messages]

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


def fields(text):
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


@case("systemd_notify_protocol")
def systemd_notify_protocol(ctx):
    """Type=notify: with NOTIFY_SOCKET set (a path), READY=1 comes once and
    only when both ports accept; each SIGHUP brings RELOADING=1 with a
    MONOTONIC_USEC of the moment, then READY=1 (a failed reload too, saying
    so in STATUS); SIGTERM brings STOPPING=1; nothing else is sent."""
    px = ctx.proxy(start=False)
    ns = NotifySocket(px.dir, ports=(px.port, px.tls_port))
    try:
        through(px, env={"NOTIFY_SOCKET": ns.env})
        start(ctx, px)
        first = ns.wait(1)
        ctx.require(first, "no notification after start")
        _, text, accepting = first[0]
        ctx.check(text == "READY=1", f"first notification {text!r}, want READY=1")
        ctx.check(accepting == [True, True],
                  f"at READY=1 the ports accepted connections: {accepting} (want both)")

        before = time.monotonic_ns() // 1000
        px.reload()
        got = ns.wait(3)
        after = time.monotonic_ns() // 1000
        ctx.require(len(got) == 3, f"after SIGHUP: {ns.texts()}")
        f = fields(got[1][1])
        ctx.check(f.get("RELOADING") == "1" and "MONOTONIC_USEC" in f,
                  f"reload begins with {got[1][1]!r}, want RELOADING=1 and MONOTONIC_USEC")
        usec = int(f.get("MONOTONIC_USEC", "0") or 0)
        ctx.check(before <= usec <= after,
                  f"MONOTONIC_USEC {usec} not between {before} and {after} (CLOCK_MONOTONIC)")
        f = fields(got[2][1])
        ctx.check(f.get("READY") == "1" and "reloaded" in f.get("STATUS", ""),
                  f"reload ends with {got[2][1]!r}, want READY=1")
        ctx.check(got[1][0] <= got[2][0], "READY=1 before RELOADING=1")
        ctx.check(px.events.wait("reload", 5, detail="ok"), "no reload event (ok)")

        good = px.config.read_text()
        px.config.write_text(good + "upstream_tls = sideways\n")
        px.proc.send_signal(signal.SIGHUP)
        got = ns.wait(5)
        ctx.require(len(got) == 5, f"after a bad SIGHUP: {ns.texts()}")
        ctx.check(fields(got[3][1]).get("RELOADING") == "1", f"bad reload begins with {got[3][1]!r}")
        f = fields(got[4][1])
        ctx.check(f.get("READY") == "1" and "failed" in f.get("STATUS", ""),
                  f"bad reload ends with {got[4][1]!r}, want READY=1 and a STATUS saying it failed")
        px.config.write_text(good)

        status = px.stop()
        ctx.check(status == 0, f"exit status {status} after SIGTERM")
        got = ns.wait(6, timeout=2)
        ctx.check(len(got) == 6 and got[5][1] == "STOPPING=1",
                  f"at SIGTERM: {ns.texts()[5:]}, want STOPPING=1")
        time.sleep(0.2)
        ctx.check(len(ns.messages) == 6, f"more notifications than expected: {ns.texts()}")
    finally:
        ns.close()


@case("systemd_notify_abstract")
def systemd_notify_abstract(ctx):
    """NOTIFY_SOCKET=@name (an abstract socket, as systemd in a container may
    give): READY=1 arrives, a login works, STOPPING=1 at SIGTERM."""
    px = ctx.proxy(start=False)
    ns = NotifySocket(px.dir, abstract=True, ports=(px.port,))
    try:
        through(px, env={"NOTIFY_SOCKET": ns.env})
        start(ctx, px)
        got = ns.wait(1)
        ctx.check(got and got[0][1] == "READY=1", f"after start: {ns.texts()}")
        r = ctx.client(px.port)
        ctx.check(r.get("ok"), f"login: {r.get('error')}")
        harness.wait_until(lambda: px.events.find("close"), 5)
        px.stop()
        got = ns.wait(2, timeout=2)
        ctx.check(len(got) == 2 and got[1][1] == "STOPPING=1", f"at SIGTERM: {ns.texts()}")
    finally:
        ns.close()


@case("systemd_notify_unreachable")
def systemd_notify_unreachable(ctx):
    """NOTIFY_SOCKET naming a socket nobody listens on: the proxy serves,
    reloads and stops as without it, and says so on stderr once only."""
    px = ctx.proxy(start=False)
    through(px, env={"NOTIFY_SOCKET": str(px.dir / "nobody.sock")})
    start(ctx, px)
    r = ctx.client(px.port)
    ctx.check(r.get("ok"), f"login: {r.get('error')}")
    for n in (1, 2):
        px.reload()
        ctx.check(harness.wait_until(lambda: len(px.events.find("reload", detail="ok")) >= n, 5),
                  f"reload {n} not done")
    px.stop()
    lines = [l for l in px.stderr().splitlines() if "NOTIFY_SOCKET" in l]
    ctx.check(len(lines) == 1, f"{len(lines)} lines about NOTIFY_SOCKET on stderr, want 1: {lines}")


def unit_value(text, key):
    return [l.split("=", 1)[1] for l in text.splitlines() if l.startswith(key + "=")]


@case("systemd_unit_verify", prosody=None, proxy=False)
def systemd_unit_verify(ctx):
    """conf/systemd/xmpp-inspect.service: `systemd-analyze verify` is clean
    (a copy whose ExecStart is the binary under test; the man pages of
    conf/man if they are there), `systemd-analyze security --offline=yes`
    rates its exposure at most 2.5, ExecStart is where make install puts
    the binary, and LimitNOFILE fits max_sessions' default."""
    if not shutil.which("systemd-analyze"):
        ctx.skip("systemd-analyze not installed")
    text = UNIT.read_text()
    exe = unit_value(text, "ExecStart")
    ctx.check(exe and exe[0].split()[0] == "/usr/local/sbin/xmpp-inspect",
              f"ExecStart is {exe}, want /usr/local/sbin/xmpp-inspect (make install, PREFIX=/usr/local)")
    for key, want in (("Type", "notify"), ("ExecReload", "/bin/kill -HUP $MAINPID"),
                      ("LogsDirectory", "xmpp-inspect")):
        ctx.check(unit_value(text, key) == [want], f"{key}= is {unit_value(text, key)}, want {want}")
    bounds = (REPO / "src" / "bounds.h").read_text()
    sessions = int(re.search(r"#define DEFAULT_MAX_SESSIONS (\d+)", bounds).group(1))
    listeners = 2 * int(re.search(r"#define MAX_LISTENERS (\d+)", bounds).group(1))
    want = 2 * sessions + listeners + FIXED
    ctx.check(unit_value(text, "LimitNOFILE") == [str(want)],
              f"LimitNOFILE={unit_value(text, 'LimitNOFILE')}, want 2 * {sessions} sessions "
              f"+ {listeners} listeners + {FIXED} = {want}")

    tmp = Path(tempfile.mkdtemp(prefix="xi-unit-"))
    try:
        binary = os.environ.get("XI_BIN") or ctx.runner.binary
        (tmp / "xmpp-inspect.service").write_text(
            text.replace("/usr/local/sbin/xmpp-inspect", str(Path(binary).resolve())))
        env = dict(os.environ)
        pages = [p for p in (REPO / "conf" / "man").glob("*.[1-8]")] \
            if (REPO / "conf" / "man").is_dir() else []
        man = "no"
        if {p.name for p in pages} >= {"xmpp-inspect.8", "xmpp-inspect.conf.5"}:
            for p in pages:
                sect = tmp / "man" / f"man{p.suffix[1:]}"
                sect.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, sect / p.name)
            env["MANPATH"] = str(tmp / "man")
            man = "yes"
        else:
            ctx.note("conf/man has no xmpp-inspect.8 and xmpp-inspect.conf.5: verify --man=no")
        r = subprocess.run(["systemd-analyze", "verify", f"--man={man}",
                            str(tmp / "xmpp-inspect.service")],
                           capture_output=True, text=True, env=env, cwd=tmp, timeout=60)
        out = (r.stdout + r.stderr).strip()
        ctx.check(r.returncode == 0 and not out, f"systemd-analyze verify (--man={man}): "
                  f"status {r.returncode}: {out[:500]}")
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25",
                            str(tmp / "xmpp-inspect.service")],
                           capture_output=True, text=True, cwd=tmp, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
        ctx.check(m and float(m.group(1)) <= 2.5 and r.returncode == 0,
                  f"systemd-analyze security: status {r.returncode}, "
                  f"exposure {m.group(1) if m else '?'} (want at most 2.5)")
        if m:
            ctx.note(f"exposure {m.group(1)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ================================================================ log rotation


def logrotate_conf(ctx, logdir, pid, state_dir):
    """The shipped snippet for the case: its log directory turned into
    logdir, its postrotate into a SIGHUP to pid. Returns the config path."""
    text = LOGROTATE.read_text()
    ctx.require("/var/log/xmpp-inspect/" in text and "systemctl kill -s HUP xmpp-inspect.service" in text,
                "conf/logrotate/xmpp-inspect: no /var/log/xmpp-inspect/ paths or systemctl kill line")
    text = text.replace("/var/log/xmpp-inspect/", f"{logdir}/")
    text = text.replace("systemctl kill -s HUP xmpp-inspect.service", f"kill -HUP {pid}")
    conf = Path(state_dir) / "logrotate.conf"
    conf.write_text(text)
    conf.chmod(0o644)  # logrotate ignores a config others may write
    return conf


def rotate(ctx, conf):
    r = subprocess.run(["logrotate", "-f", "-s", str(conf.parent / "logrotate.state"), str(conf)],
                       capture_output=True, text=True, timeout=30)
    ctx.check(r.returncode == 0, f"logrotate: status {r.returncode}: {(r.stdout + r.stderr)[:300]}")


def rotated(path):
    """path's rotations, oldest first, then path itself (what exists)."""
    out = []
    for p in path.parent.iterdir():
        m = re.fullmatch(re.escape(path.name) + r"\.(\d+)(\.gz)?", p.name)
        if m:
            out.append((int(m.group(1)), p))
    files = [p for _, p in sorted(out, reverse=True)]
    return files + ([path] if path.exists() else [])


def read_log(p):
    return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()


def whole_json_lines(ctx, files):
    """The events of files in order; each file must hold whole JSON lines."""
    events = []
    for p in files:
        data = read_log(p)
        ctx.check(data == b"" or data.endswith(b"\n"), f"{p.name} ends inside a line: {data[-80:]!r}")
        for i, line in enumerate(data.split(b"\n")[:-1]):
            try:
                ev = json.loads(line)
            except ValueError:
                ctx.check(False, f"{p.name} line {i + 1} is not JSON: {line[:100]!r}")
                continue
            ctx.check(isinstance(ev, dict), f"{p.name} line {i + 1} is not an object")
            ev["_file"] = p.name
            events.append(ev)
    return events


def rotating_proxy(ctx, workers=None):
    """A proxy whose event and key logs are in a log directory of their
    own (as /var/log/xmpp-inspect), with the snippet set on it."""
    px = ctx.proxy(start=False, **({"workers": str(workers)} if workers else {}))
    logdir = px.dir / "log"
    logdir.mkdir()
    px.event_log, px.keylog = logdir / "events.jsonl", logdir / "keys.log"
    px.keys["event_log"], px.keys["keylog"] = str(px.event_log), str(px.keylog)
    px.events = harness.EventLog(px.event_log)
    start(ctx, px)
    return px, logdir, logrotate_conf(ctx, logdir, px.proc.pid, px.dir)


def one_login(port):
    """A PLAIN login and a clean close; True if the login succeeded."""
    c = raw.RawClient(port, ca=CA)
    try:
        raw.login_plain(c, "alice", USERS["alice"])
        c.send("</stream:stream>")
        c.wait_closed()
        return True
    finally:
        c.close()


@case("logrotate_during_logins")
def logrotate_during_logins(ctx):
    """logrotate (the shipped snippet: compress, delaycompress, nocreate,
    SIGHUP in postrotate) rotates the event and key logs six times while
    four clients log in without pause: every login made is in the logs
    exactly once (its connect, login and close), no line is cut or split
    across files, the files read in rotation order keep the events' order,
    and the key log's lines are whole too. workers = 1: one writer, so the
    whole log's order can be asked for (the workers' variant is below)."""
    logrotate_case(ctx, 1)


@case("logrotate_during_logins_workers")
def logrotate_during_logins_workers(ctx):
    """The same with the default workers (one per core, two here): every
    worker reopens its own writers at the SIGHUP the supervisor passes on;
    the same counts, whole lines in every file, and each session's events
    in order (one writer's order: the workers' lines are written as each
    writer's batches come, a few milliseconds apart, so the whole file is
    in order only with one)."""
    logrotate_case(ctx, None)


def logrotate_case(ctx, workers):
    if not shutil.which("logrotate"):
        ctx.skip("logrotate not installed (tools/deps installs it)")
    px, logdir, conf = rotating_proxy(ctx, workers)
    ctx.require(px.events.wait("start", 5), "no start event")
    stop = threading.Event()
    made, failed, errors = [0], [0], []
    lock = threading.Lock()

    def worker():
        while not stop.is_set():
            try:
                ok = one_login(px.port)
            except (AssertionError, OSError) as e:
                ok = False
                errors.append(str(e))
            with lock:
                made[0] += ok
                failed[0] += not ok

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    rotations = 6
    try:
        for i in range(rotations):
            time.sleep(0.5)
            rotate(ctx, conf)
            # the proxy reopens at SIGHUP: a new file at the path
            ctx.check(harness.wait_until(lambda: px.event_log.exists(), 5),
                      f"rotation {i + 1}: no new event log after SIGHUP")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    ctx.check(failed[0] == 0, f"{failed[0]} logins failed during rotation: {errors[:3]}")
    ctx.check(made[0] >= 20, f"only {made[0]} logins in {rotations} rotations")
    px.stop()

    files = rotated(px.event_log)
    events = whole_json_lines(ctx, files)
    ctx.check(len(files) == rotations + 1, f"event log files {[p.name for p in files]}, "
              f"want the log and {rotations} rotations")
    ctx.check(any(p.suffix == ".gz" for p in files), "no rotation was compressed")
    def count(name, **kw):
        return [e for e in events if harness.match(e, name, **kw)]
    logins = count("login", outcome="success")
    ctx.check(len(logins) == made[0], f"{len(logins)} successful login events, {made[0]} logins made")
    connects, closes = count("connect"), count("close")
    ctx.check(len(connects) == made[0] and len({e["sid"] for e in connects}) == made[0],
              f"{len(connects)} connect events ({len({e['sid'] for e in connects})} sids), "
              f"{made[0]} connections made")
    ctx.check({e["sid"] for e in closes} == {e["sid"] for e in connects} and len(closes) == len(connects),
              f"{len(closes)} close events for {len(connects)} sessions")
    ctx.check(len(count("start")) == 1 and len(count("stop")) == 1,
              f"{len(count('start'))} start and {len(count('stop'))} stop events")
    ctx.check(len(count("reload", detail="ok")) == rotations,
              f"{len(count('reload', detail='ok'))} reload events, want {rotations}")
    spread = {e["_file"] for e in logins}
    ctx.check(len(spread) >= rotations - 1, f"logins only in {sorted(spread)}: rotation did not "
              "happen while they ran")
    if px.workers() == 1:
        ts = [e["ts"] for e in events]
        ctx.check(ts == sorted(ts), "events out of order when the files are read oldest first")
    by_sid = {}
    for e in events:
        if e.get("sid"):
            by_sid.setdefault(e["sid"], []).append(e["ts"])
    ctx.check(all(t == sorted(t) for t in by_sid.values()),
              "a session's events out of order when the files are read oldest first")
    stop_ev = count("stop")
    ctx.check(stop_ev and stop_ev[-1].get("events_lost") == 0, f"stop: {stop_ev[-1:]}")

    keyfiles = rotated(px.keylog)
    ctx.check(len(keyfiles) == rotations + 1, f"key log files {[p.name for p in keyfiles]}")
    keyline = re.compile(rb"^[A-Z0-9_]+ [0-9a-f]{64} [0-9a-f]+$")
    nkeys = 0
    for p in keyfiles:
        data = read_log(p)
        ctx.check(data == b"" or data.endswith(b"\n"), f"{p.name} ends inside a line")
        for line in data.split(b"\n")[:-1]:
            nkeys += 1
            if not keyline.match(line):
                ctx.check(False, f"{p.name}: not a whole key log line: {line[:100]!r}")
                break
    ctx.check(nkeys >= 2 * made[0], f"{nkeys} key log lines for {made[0]} TLS logins")
    plain = px.dir / "all-logs"
    plain.write_bytes(b"".join(read_log(p) for p in files + keyfiles))
    leaks = [l for pw in ALL_PASSWORDS for l in harness.find_secrets([plain], pw, list(USERS))]
    plain.unlink()
    ctx.check(not leaks, f"password in the rotated logs: {leaks}")


@case("logrotate_failed_reload")
def logrotate_failed_reload(ctx):
    """A rotation while the configuration file is broken: the reload fails
    (the running configuration is kept) but the logs are reopened all the
    same, so events go on into the new file, not into the rotated one that
    the next rotation compresses and deletes."""
    if not shutil.which("logrotate"):
        ctx.skip("logrotate not installed (tools/deps installs it)")
    px, logdir, conf = rotating_proxy(ctx)
    ctx.require(px.events.wait("start", 5), "no start event")
    good = px.config.read_text()
    px.config.write_text(good + "upstream_tls = sideways\n")
    rotate(ctx, conf)
    ctx.check(harness.wait_until(lambda: px.events.find("reload", detail="failed"), 5),
              "no reload failed event in a new event log after the rotation")
    ok = False
    try:
        ok = one_login(px.port)
    except (AssertionError, OSError) as e:
        ctx.note(f"login: {e}")
    ctx.check(ok, "login after the failed reload")
    px.config.write_text(good)
    ctx.check(harness.wait_until(lambda: px.events.find("close"), 5),
              "the login's events are not in the new event log")
    old = whole_json_lines(ctx, [logdir / "events.jsonl.1"]) if (logdir / "events.jsonl.1").exists() else []
    ctx.check(old and not [e for e in old if e.get("event") in ("connect", "reload")],
              f"the rotated log took events after SIGHUP: {[e.get('event') for e in old]}")
    ctx.check(px.keylog.exists(), "the key log was not reopened")


# ================================================================ descriptors


@case("nofile_hard_limit_low")
def nofile_hard_limit_low(ctx):
    """Soft limit 1024, hard 2048 (max_sessions 20000 with two listeners
    needs 40034): the soft limit goes up to 2048, stderr says once how many
    sessions fit ((2048 - 34) / 2 = 1007) and max_sessions is lowered to
    that; a reload with the same configuration says nothing more; logins
    work."""
    # one process's descriptor arithmetic (workers = N: per worker, cases_workers)
    px = ctx.proxy(start=False, workers="1")
    through(px, nofile=(1024, 2048))
    start(ctx, px)
    ctx.check(nofile_limits(px.proc.pid) == (2048, 2048),
              f"limits {nofile_limits(px.proc.pid)}, want soft raised to the hard 2048")
    want = f"max_sessions 20000 needs {NEED_DEFAULT} file descriptors, the limit is 2048 " \
           f"(hard 2048): max_sessions lowered to {(2048 - 2 - FIXED) // 2}"
    ctx.check(harness.wait_until(lambda: want in px.stderr(), 5),
              f"stderr does not say {want!r}: {px.stderr()[-400:]!r}")
    px.reload()
    ctx.check(px.events.wait("reload", 5, detail="ok"), "no reload")
    r = ctx.client(px.port)
    ctx.check(r.get("ok"), f"login: {r.get('error')}")
    n = px.stderr().count("max_sessions 20000 needs")
    ctx.check(n == 1, f"said {n} times on stderr, want once")


@case("nofile_cap_refuses")
def nofile_cap_refuses(ctx):
    """A limit (soft and hard) that fits eight sessions beside two listeners
    and the fixed descriptors: with eight open the ninth connection is
    refused at accept with rule max_sessions (not dropped for want of a
    descriptor), and once one ends a new one is served."""
    # one process's descriptor arithmetic (workers = N: per worker, cases_workers)
    px = ctx.proxy(start=False, workers="1")
    limit = 2 * 8 + 2 + FIXED
    through(px, nofile=(limit, limit))
    start(ctx, px)
    ctx.check("max_sessions lowered to 8" in px.stderr(), f"stderr: {px.stderr()[-300:]!r}")
    held = [ctx.raw(px.port) for _ in range(8)]
    ctx.require(harness.wait_until(lambda: len(px.events.find("connect")) == 8, 5),
                f"{len(px.events.find('connect'))} of 8 sessions started")
    extra = ctx.raw(px.port)
    ctx.check(px.events.wait("refused", 5, rule="max_sessions"),
              f"the ninth connection was not refused (max_sessions): {px.events.find('refused')}")
    ctx.check(extra.wait_closed(5), "the refused connection was not closed")
    ctx.check("out of file descriptors" not in px.stderr(), "the proxy ran out of descriptors")
    held[0].close()
    ctx.require(harness.wait_until(lambda: px.events.find("close"), 5), "a session did not end")
    r = ctx.client(px.port)
    ctx.check(r.get("ok"), f"login once a session ended: {r.get('error')}")


@case("nofile_hard_limit_enough")
def nofile_hard_limit_enough(ctx):
    """Soft limit 1024 and a hard one high enough: the soft limit is raised
    to what max_sessions needs (2 per session, 1 per listener, 32), no more,
    and nothing is said; with max_sessions 100 the soft limit of 1024 is left
    as it is. The hard limit is the test's own (raising it needs
    CAP_SYS_RESOURCE), max_sessions the default 20000 if it allows that."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 50000 if hard == resource.RLIM_INFINITY else min(hard, 50000)
    sessions = 20000 if hard >= NEED_DEFAULT else (hard - 2 - FIXED) // 2 - 100
    if sessions < 1000:
        ctx.skip(f"the hard descriptor limit here is {hard}")
    need = 2 * sessions + 2 + FIXED
    # one process's descriptor arithmetic (workers = N: per worker, cases_workers)
    px = ctx.proxy(start=False, max_sessions=str(sessions), workers="1")
    through(px, nofile=(1024, hard))
    start(ctx, px)
    ctx.check(nofile_limits(px.proc.pid) == (need, hard),
              f"limits {nofile_limits(px.proc.pid)}, want ({need}, {hard}) for max_sessions {sessions}")
    r = ctx.client(px.port)
    ctx.check(r.get("ok"), f"login: {r.get('error')}")
    ctx.check("max_sessions" not in px.stderr(), f"stderr: {px.stderr()[-300:]!r}")
    small = ctx.proxy(start=False, max_sessions="100", workers="1")
    through(small, nofile=(1024, hard))
    start(ctx, small)
    ctx.check(nofile_limits(small.proc.pid) == (1024, hard), f"limits {nofile_limits(small.proc.pid)}")
