"""tools/soak --faults: real logins through xmpp-inspect while faults happen.

Each fault has its own run: a fresh private Prosody and proxy, a warm-up
load, the baseline (descriptors, RSS), then a load of real logins for
--fault-seconds (or until --logins) while the fault is injected, then the
checks. The faults (issue 15):

  1 hup   SIGHUP to the proxy every second, the configuration file
          alternating between a good one (two variants) and a bad one (one
          of seven kinds: syntax, unknown key, bad value, missing
          certificate, event log or key log in a missing directory, missing
          upstream CA); the proxy must log a `reload` event for each, `ok`
          for the good ones and `failed` for the bad ones, and drop nothing.
  2 kill  the upstream Prosody SIGKILLed and restarted every 2-4 s.
  3 stop  the upstream SIGSTOPped for longer than the proxy's
          connect_timeout and login_timeout (set short for this run),
          then SIGCONT, in turns.
  4 rst   half the clients reset (SO_LINGER 0, close: a TCP RST) at a random
          point of the login: before the header, mid-header, after the
          features, after <starttls/>, during either TLS handshake, mid
          <auth>, after <auth>, after <success/>, after the bind; the other
          half must all log in.
  5 disk  the event log on a private tmpfs (mounted here, unmounted after,
          also on failure; SKIP if mount fails) filled by a filler file and
          freed again, in turns: 4 s full, 3 s free, the second full spell
          long (--disk-long-hold) to overflow the queue (event_log_queue
          set to 1M); once with event_log_full unset (continue), once with
          refuse (that run by time only, at most 60 s: refused clients
          retry at once). Checked against the durability contract: every line
          whole JSON, and every session and every login either in the log
          or counted by a `log_gap` event.

The load: `concurrency` asyncio raw clients in one thread, each logging in
again and again (PLAIN over STARTTLS, a quarter over Direct TLS; connect,
header, features, STARTTLS, TLS, features, PLAIN, success, restart, bind,
</stream:stream>). Each client records what it got and when: success, a SASL
failure, a stream error (the answers), or a close without an answer, an
error, or nothing before its deadline (a hang). The deadline for the login's
answer is the proxy's login_timeout plus a margin: the proxy promises an
answer by then whatever the upstream does.

After each run: the proxy alive (no crash) and exiting 0 on SIGTERM; every
client answered in time; every `connect` sid with its `close`; every session
that sent <auth> with its `login` record (both from the event log and per
client, matched by the client's port); descriptors and RSS back to the
baseline (within the margins); every event log line a JSON object.
"""

import asyncio
import base64
import bisect
import errno
import json
import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import harness

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
STREAM_ERROR = "{%s}error" % NS_STREAM

USERS = {f"fault{i}": f"Xi-fault{i}-Pw-4Tn9Qe" for i in range(8)}

FAULTS = ("hup", "kill", "stop", "rst", "disk")

# Where a resetting client (fault 4) sends its RST. "…_mid" points cut an
# element or a handshake in half.
RESET_POINTS = ("connected", "header_mid", "header", "features", "starttls", "tls_mid",
                "tls", "auth_mid", "auth", "success", "bound")


def header(to="lab.test"):
    return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' to='{to}' version='1.0' xml:lang='en'>")


def local(tag):
    return tag.rsplit("}", 1)[-1]


# ---------------------------------------------------------------- the load


class StreamError(Exception):
    def __init__(self, condition):
        super().__init__(condition)
        self.condition = condition


class Eof(Exception):
    """The peer closed (EOF or </stream:stream>) with no answer."""


class Hang(Exception):
    """Nothing came before the deadline."""


class ResetDone(Exception):
    """The client reset the connection on purpose."""


class Conn:
    """One client connection: an asyncio stream and an incremental XML
    reader of the top-level elements (raw.py's, without blocking)."""

    def __init__(self, sock, reader, writer):
        self.sock, self.reader, self.writer = sock, reader, writer
        self.eof = False
        self.tail = b""  # the last bytes received since the last restart, for diagnostics
        self.pending = None  # bytes of the next stream, received before its restart
        self.early_header = False
        self.reset_parser()

    def reset_parser(self):
        """A new stream: a new parser, fed first what already came of it."""
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.elements = []
        self.stream_closed = False
        self.tail = b""
        self.fed = 0
        pending, self.pending = getattr(self, "pending", None), None
        if pending:
            self.feed(pending)

    def send(self, text):
        self.writer.write(text.encode())

    def feed(self, data):
        """Parses data. An XML declaration past the start of a stream
        begins the next stream (a peer may open it right after <success/>,
        in the same read): those bytes wait for reset_parser()."""
        if self.pending is not None:
            self.pending += data
            return
        i = data.find(b"<?xml", 0 if self.fed else 1)
        if i >= 0:
            data, self.pending = data[:i], data[i:]
            self.early_header = True  # the peer did not wait for our header
        self.fed += len(data)
        self.tail = (self.tail + data)[-1500:]
        try:
            self.parser.feed(data)
            for kind, el in self.parser.read_events():
                if kind == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.elements.append(el)
                    elif self.depth == 0:
                        self.stream_closed = True
        except ET.ParseError as e:
            raise Eof(f"unparsable: {e}; received since the (re)start: {self.tail!r}")

    async def element(self, deadline):
        """The next top-level element; StreamError for a stream error, Eof
        for a close, Hang at the deadline."""
        loop = asyncio.get_running_loop()
        while not self.elements:
            if self.pending is not None:
                raise Eof("a new stream began where an element was due")
            if self.stream_closed:
                raise Eof("stream closed")
            if self.eof:
                raise Eof("eof")
            if loop.time() >= deadline:
                raise Hang()
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(65536)
            except TimeoutError:
                raise Hang()
            if not data:
                self.eof = True
                continue
            self.feed(data)
        el = self.elements.pop(0)
        if el.tag == STREAM_ERROR:
            cond = "unknown"
            for child in el:
                if child.tag.startswith("{%s}" % NS_STREAMS_ERR) and local(child.tag) != "text":
                    cond = local(child.tag)
                    break
            raise StreamError(cond)
        return el

    async def expect(self, name, deadline):
        el = await self.element(deadline)
        if local(el.tag) != name:
            raise Eof(f"expected <{name}>, got <{local(el.tag)}>")
        return el

    async def closed(self, deadline):
        """Waits for the peer's </stream:stream> or EOF."""
        loop = asyncio.get_running_loop()
        while not (self.stream_closed or self.eof):
            if loop.time() >= deadline:
                raise Hang()
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(65536)
            except TimeoutError:
                raise Hang()
            if not data:
                self.eof = True
            else:
                self.feed(data)

    def rst(self):
        """SO_LINGER 0 and close: the kernel sends a RST, not a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.writer.transport.abort()


class LoadConfig:
    def __init__(self, port, tls_port, concurrency, answer_timeout, post_timeout,
                 direct_ratio=0.25, reset_ratio=0.0, users=USERS):
        self.port, self.tls_port = port, tls_port
        self.concurrency = concurrency
        self.answer_timeout = answer_timeout  # connect to SASL answer
        self.post_timeout = post_timeout      # after success: restart, bind, close
        self.direct_ratio = direct_ratio
        self.reset_ratio = reset_ratio
        self.users = users
        self.ctx = ssl.create_default_context(cafile=str(harness.CA))
        self.ctx.set_alpn_protocols(["xmpp-client"])


async def one_login(cfg, n, direct, reset_at):
    """One login. Returns its record: outcome (ok, sasl_failure,
    stream_error, eof, error, hang, reset), stage, detail, answered (a SASL
    answer or stream error came before success, or success itself), ms
    (connect to answer), port (the client's), auth_sent."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + cfg.answer_timeout
    r = {"direct": direct, "reset_at": reset_at, "auth_sent": False, "answered": False,
         "wall": time.time(), "port": None}
    stage = "connect"
    conn = None
    sock = None

    async def point(name):
        """A place the client may reset at (fault 4)."""
        if reset_at == name:
            if random.random() < 0.5:
                await asyncio.sleep(random.uniform(0, 0.02))
            conn.rst()
            raise ResetDone()

    def rst_soon():
        """A reset in the middle of a TLS handshake: a timer while it runs."""
        return loop.call_later(random.uniform(0, 0.004), conn.rst)

    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout_at(deadline):
            await loop.sock_connect(sock, ("127.0.0.1", cfg.tls_port if direct else cfg.port))
        r["port"] = sock.getsockname()[1]
        r["connected"] = time.monotonic()  # orders the clients of one port (match_clients)
        reader, writer = await asyncio.open_connection(sock=sock)
        conn = Conn(sock, reader, writer)
        await point("connected")

        async def handshake():
            """TLS on the connection (reset mid-way for tls_mid)."""
            timer = rst_soon() if reset_at == "tls_mid" else None
            try:
                async with asyncio.timeout_at(deadline):
                    await writer.start_tls(cfg.ctx, server_hostname=harness.DOMAIN)
            except (AttributeError, ssl.SSLError, ConnectionError, OSError):
                if timer is not None and conn.sock.fileno() < 0:
                    raise ResetDone()  # our own reset cut the handshake
                raise
            if timer is not None:
                timer.cancel()
                await point("tls_mid")  # the handshake beat the timer: reset now

        if direct:
            stage = "tls"
            await handshake()
        stage = "features"
        h = header()
        if reset_at == "header_mid":
            conn.send(h[:len(h) // 2])
            await writer.drain()
            await point("header_mid")
        conn.send(h)
        await point("header")
        f = await conn.expect("features", deadline)
        await point("features")
        if not direct:
            if f.find("{%s}starttls" % NS_TLS) is None:
                raise Eof("no <starttls/> offered")
            stage = "starttls"
            conn.send(f"<starttls xmlns='{NS_TLS}'/>")
            await point("starttls")
            await conn.expect("proceed", deadline)
            stage = "tls"
            await handshake()
            await point("tls")
            stage = "features2"
            conn.reset_parser()
            conn.send(header())
            f = await conn.expect("features", deadline)
        else:
            await point("tls")
        stage = "auth"
        user = random.choice(list(cfg.users))
        payload = base64.b64encode(f"\0{user}\0{cfg.users[user]}".encode()).decode()
        auth = f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{payload}</auth>"
        if reset_at == "auth_mid":
            conn.send(auth[:len(auth) // 2])
            await writer.drain()
            await point("auth_mid")
        conn.send(auth)
        r["auth_sent"] = True
        await point("auth")
        el = await conn.element(deadline)
        r["ms"] = int(1000 * (loop.time() - t0))
        if local(el.tag) == "failure":
            cond = next((local(c.tag) for c in el if local(c.tag) != "text"), "unknown")
            r.update(outcome="sasl_failure", stage=stage, detail=cond, answered=True)
            return r
        if local(el.tag) != "success":
            raise Eof(f"expected <success/>, got <{local(el.tag)}>")
        r["answered"] = True
        await point("success")
        post = loop.time() + cfg.post_timeout
        stage = "restart"
        conn.reset_parser()
        conn.send(header())
        await conn.expect("features", post)
        stage = "bind"
        conn.send(f"<iq type='set' id='b{n}'><bind xmlns='{NS_BIND}'>"
                  f"<resource>r{n}</resource></bind></iq>")
        el = await conn.expect("iq", post)
        if el.get("type") != "result":
            raise Eof(f"bind answered type={el.get('type')}")
        await point("bound")
        stage = "close"
        conn.send("</stream:stream>")
        await conn.closed(post)
        r.update(outcome="ok", stage="done", detail="")
        return r
    except ResetDone:
        r.update(outcome="reset", stage=stage, detail=reset_at)
        return r
    except StreamError as e:
        r.update(outcome="stream_error", stage=stage, detail=e.condition, answered=True)
        r.setdefault("ms", int(1000 * (loop.time() - t0)))
        return r
    except Eof as e:
        r.update(outcome="eof", stage=stage, detail=str(e))
        return r
    except (Hang, TimeoutError):
        r.update(outcome="hang", stage=stage, detail=f"nothing in time ({stage})")
        return r
    except (ssl.SSLError, ConnectionError, OSError) as e:
        r.update(outcome="error", stage=stage, detail=f"{type(e).__name__}: {e}"[:120])
        return r
    finally:
        r["elapsed"] = loop.time() - t0
        if conn is not None and conn.early_header:
            r["early_header"] = conn.tail[-600:].decode("utf-8", "replace")
        if conn is not None:
            w = conn.writer
            try:
                if r.get("outcome") in ("ok", "sasl_failure", "stream_error", "eof"):
                    w.close()
                    async with asyncio.timeout(3):
                        await w.wait_closed()
                else:
                    w.transport.abort()
            except Exception:  # noqa: BLE001 (a close that fails is no outcome)
                try:
                    w.transport.abort()
                except Exception:  # noqa: BLE001
                    pass
        elif sock is not None:
            sock.close()


class Load(threading.Thread):
    """cfg.concurrency clients logging in again and again, in one asyncio
    loop in this thread, until stop() or `seconds` or `target` logins."""

    def __init__(self, cfg, seconds, target=None, label="load"):
        super().__init__(daemon=True)
        self.cfg, self.seconds, self.target, self.label = cfg, seconds, target, label
        self.results = []
        self.started = 0
        self.stop_flag = threading.Event()
        self.t0 = self.t1 = None
        self.error = None

    def stop(self):
        self.stop_flag.set()

    def counts(self):
        rs = list(self.results)
        return len(rs), sum(1 for x in rs if x["outcome"] == "ok")

    def run(self):
        try:
            asyncio.run(self._main())
        except Exception as e:  # noqa: BLE001 (reported by the caller)
            self.error = f"{type(e).__name__}: {e}"
        self.t1 = time.monotonic()

    async def _worker(self, end):
        cfg = self.cfg
        while not self.stop_flag.is_set() and time.monotonic() < end:
            if self.target is not None and self.started >= self.target:
                return
            self.started += 1
            n = self.started
            direct = random.random() < cfg.direct_ratio
            reset_at = random.choice(RESET_POINTS) if random.random() < cfg.reset_ratio else None
            try:
                r = await one_login(cfg, n, direct, reset_at)
            except Exception as e:  # noqa: BLE001 (a bug of the load generator, not the proxy)
                r = {"outcome": "loaderror", "stage": "?", "answered": False, "auth_sent": False,
                     "detail": f"{type(e).__name__}: {e}", "port": None, "wall": time.time(),
                     "reset_at": reset_at, "direct": direct}
                if not self.error:
                    self.error = traceback.format_exc(limit=6)
            self.results.append(r)
            if r["outcome"] not in ("ok", "reset"):
                # a real client backs off; without it a down upstream makes
                # each client spin through thousands of instant refusals
                await asyncio.sleep(random.uniform(0.1, 0.3))

    async def _main(self):
        self.t0 = time.monotonic()
        end = self.t0 + self.seconds
        await asyncio.gather(*(self._worker(end) for _ in range(self.cfg.concurrency)))


# ---------------------------------------------------------------- the event log


class Tracker:
    """Reads the event log as it grows (only the new bytes each time) and
    keeps what the checks need per session."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.bad = []           # lines that are not a JSON object
        self.lines = 0
        self.connects = {}      # sid -> (peer port, direct TLS port?)
        self.connect_ts = {}    # sid -> ts of its connect
        self.closes = set()
        self.auths = set()
        self.logins = {}        # sid -> outcome
        self.seen = set()       # every sid on any line
        self.gaps = []
        self.reloads = []
        self.stops = []
        self.starts = 0
        self.other_sid0 = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self
        if not data:
            return self
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # incomplete (or empty)
        for raw in lines:
            self._line(raw)
        return self

    def finish(self):
        """After the proxy exited: a last piece without its newline is a
        truncated line."""
        self.poll()
        if self.partial:
            self.bad.append(self.partial[:200])
            self.partial = b""
        return self

    def _line(self, raw):
        if not raw.strip():
            return
        self.lines += 1
        try:
            ev = json.loads(raw)
        except ValueError:
            ev = None
        if not isinstance(ev, dict) or "event" not in ev or "sid" not in ev:
            self.bad.append(raw[:200])
            return
        sid, name = ev.get("sid"), ev.get("event")
        if sid:
            self.seen.add(sid)
        if name == "connect":
            self.connect_ts[sid] = ev.get("ts", "")
            try:
                port = int(str(ev.get("peer", "")).rsplit(":", 1)[1])
            except (IndexError, ValueError):
                port = None
            self.connects[sid] = (port, ev.get("port_kind") == "direct_tls")
        elif name == "close":
            self.closes.add(sid)
        elif name == "auth":
            self.auths.add(sid)
        elif name == "login":
            self.logins[sid] = ev.get("outcome")
        elif name == "log_gap":
            self.gaps.append(ev)
        elif name == "reload":
            self.reloads.append(ev.get("detail"))
        elif name == "stop":
            self.stops.append(ev)
        elif name == "start":
            self.starts += 1
        elif sid == 0:
            k = f"{name} ({ev['rule']})" if name == "refused" and "rule" in ev else name
            self.other_sid0[k] = self.other_sid0.get(k, 0) + 1

    def events_of(self, sids, limit=40):
        """The logged events of some sessions (read again: only for a
        failure's diagnostics)."""
        sids, out = set(sids), []
        try:
            with open(self.path, "rb") as f:
                for raw in f:
                    try:
                        ev = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(ev, dict) and ev.get("sid") in sids:
                        out.append(raw.decode("utf-8", "replace").rstrip()[:300])
                        if len(out) >= limit:
                            break
        except OSError:
            pass
        return out

    def open_sessions(self):
        return [s for s in self.connects if s not in self.closes]

    def gap_sessions(self):
        s = set()
        for g in self.gaps:
            s.update(x for x in g.get("sessions", []) if isinstance(x, int))
        return s

    def gap_more(self):
        """Sessions a log_gap counts but does not list: sessions_more (the
        issue's contract) or, as the writer has it, sessions_truncated."""
        return sum(int(g.get("sessions_more") or 0) + (1 if g.get("sessions_truncated") else 0)
                   for g in self.gaps)

    def open_gap_windows(self):
        """(since, until) of the log_gaps whose session lists are cut short
        (sessions they count but do not name lost lines in that window)."""
        return [(g.get("since", ""), g.get("until", "~")) for g in self.gaps
                if g.get("sessions_truncated") or int(g.get("sessions_more") or 0) > 0]

    def gap_events(self):
        return sum(int(g.get("events") or 0) for g in self.gaps)


# ---------------------------------------------------------------- processes


def status_kib(pid, key="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler(threading.Thread):
    def __init__(self, pid, interval=0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_fds = self.peak_rss = 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            n, r = fd_count(self.pid), status_kib(self.pid)
            self.peak_fds = max(self.peak_fds, n or 0)
            self.peak_rss = max(self.peak_rss, r or 0)
            self.stop_flag.wait(self.interval)


class FaultProsody(harness.Prosody):
    """A private Prosody that can be killed, restarted on the same ports
    and data, stopped and continued."""

    def __init__(self, **kw):
        super().__init__(users=USERS, iterations=4096, **kw)
        self.stopped = False

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout=20.0):
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True, preexec_fn=harness._die_with_parent)
        harness.wait_listening([self.port, self.tls_port], timeout, self.proc, "prosody")

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def stop(self):
        self.sigcont()
        super().stop()


# ---------------------------------------------------------------- the faults


class Injector(threading.Thread):
    """Runs a fault's loop until stop(); keeps a log of what it did."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.stop_flag = threading.Event()
        self.stats = {}
        self.error = None

    def stop(self):
        self.stop_flag.set()

    def run(self):
        try:
            self.fn(self.stop_flag, self.stats)
        except Exception as e:  # noqa: BLE001 (reported as a harness failure)
            self.error = f"{type(e).__name__}: {e}"


def bad_configs(px):
    """(kind, keys) of each bad configuration: every one must be refused
    and the running one kept. They fail at different places: the parser,
    the value checks, and after parsing (certificate, CA, the logs)."""
    missing = px.dir / "no-such-dir"
    return [
        ("syntax", {"this line has no equals sign": ""}),
        ("unknown key", {"no_such_key": "1"}),
        ("bad value", {"connect_timeout": "0"}),
        ("missing cert", {"cert": str(missing / "cert.pem")}),
        ("event_log dir", {"event_log": str(missing / "events.jsonl")}),
        ("keylog dir", {"keylog": str(missing / "keys.log")}),
        ("missing upstream_ca", {"upstream_ca": str(missing / "ca.pem")}),
    ]


def write_conf(px, keys):
    lines = ["# written by tools/soak --faults"]
    for k, v in keys.items():
        lines.append(k if v == "" else f"{k} = {v}")
    tmp = px.config.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, px.config)


def fault_hup(px):
    good = [dict(px.keys), dict(px.keys, mechanisms_deny="DIGEST-MD5 CRAM-MD5",
                                  login_timeout=str(int(px.keys["login_timeout"]) + 1))]
    bads = bad_configs(px)

    def loop(stop, st):
        st.update(good=0, bad=0, kinds={})
        i = 0
        while not stop.wait(1.0):
            if i % 2 == 0:
                write_conf(px, good[(i // 2) % 2])
                st["good"] += 1
            else:
                kind, change = bads[(i // 2) % len(bads)]
                keys = dict(px.keys)
                keys.update(change)
                write_conf(px, keys)
                st["bad"] += 1
                st["kinds"][kind] = st["kinds"].get(kind, 0) + 1
            px.proc.send_signal(signal.SIGHUP)
            i += 1
        write_conf(px, px.keys)
    return loop


def fault_kill(prosody):
    def loop(stop, st):
        st.update(kills=0, down_ms=[])
        while not stop.wait(random.uniform(2.0, 4.0)):
            t = time.monotonic()
            prosody.kill()
            st["kills"] += 1
            prosody.restart()
            st["down_ms"].append(int(1000 * (time.monotonic() - t)))
    return loop


def fault_stop(prosody, stop_s, run_s):
    def loop(stop, st):
        st.update(stops=0, stopped_s=0.0)
        while not stop.wait(run_s):
            prosody.sigstop()
            st["stops"] += 1
            t = time.monotonic()
            stop.wait(stop_s)  # cut short only by the end of the run
            prosody.sigcont()
            st["stopped_s"] += time.monotonic() - t
    return loop


def fill(path, mount):
    """Writes path until the filesystem is full; returns the bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    n += os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return n


def fault_disk(mount, long_hold):
    filler = Path(mount) / "filler"

    def loop(stop, st):
        st.update(fills=0, full_s=0.0, filled_mib=0.0, free_when_full=[])
        while not stop.wait(3.0):
            n = fill(filler, mount)
            st["fills"] += 1
            st["filled_mib"] = max(st["filled_mib"], n / 1048576)
            vfs = os.statvfs(mount)
            st["free_when_full"].append(vfs.f_bavail * vfs.f_frsize)
            # the second full spell long, past the queue's bound at this
            # load (a log_gap); the others short (the queue holds them)
            hold = long_hold if st["fills"] == 2 else 4.0
            t = time.monotonic()
            stop.wait(hold)
            filler.unlink()
            st["full_s"] += time.monotonic() - t
        if filler.exists():
            filler.unlink()
    return loop


class Tmpfs:
    """A private tmpfs on a temp dir; unmounted (lazily if busy) by close()."""

    def __init__(self, mib):
        self.dir = Path(tempfile.mkdtemp(prefix="xi-soak-tmpfs-"))
        self.mounted = False
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs",
                            str(self.dir)], capture_output=True, text=True)
        if r.returncode != 0:
            self.error = (r.stderr or r.stdout).strip() or f"mount exited {r.returncode}"
            os.rmdir(self.dir)
        else:
            self.error = None
            self.mounted = True

    def close(self):
        if self.mounted:
            r = subprocess.run(["umount", str(self.dir)], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)
            self.mounted = False
            try:
                os.rmdir(self.dir)
            except OSError:
                pass


# ---------------------------------------------------------------- a run


def sanitized(binary):
    """Whether binary is an ASan build (tests/run's build/asan/...)."""
    try:
        return b"__asan_init" in Path(binary).read_bytes()
    except OSError:
        return False


def pct(values, p):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def kinds(results):
    """Counts of outcome:stage:detail over results."""
    c = {}
    for x in results:
        d = str(x.get("detail") or "").split("; received")[0]
        k = f"{x['outcome']} at {x['stage']}" + (f": {d}" if d else "")
        c[k] = c.get(k, 0) + 1
    return c


def match_clients(results, tr):
    """Each client's sid, by its port: the proxy logs the client's address
    in `connect`. A local port is reused toward the same proxy port only
    after its previous connection ended (toward the other one it may be in
    use at the same time), so per (port, proxy port) the clients, in the
    order their connects completed, and the sids pair off."""
    by_port = {}
    for sid, key in sorted(tr.connects.items()):
        by_port.setdefault(key, []).append(sid)
    out = []
    for x in sorted((x for x in results if x.get("port")), key=lambda x: x["connected"]):
        sids = by_port.get((x["port"], x["direct"]))
        out.append((x, sids.pop(0) if sids else None))
    return out


class Run:
    """One fault's run: its own Prosody, proxy, load and checks."""

    def __init__(self, fault, args, verdict, log_full=None):
        self.fault, self.args, self.verdict = fault, args, verdict
        self.log_full = log_full  # fault 5: event_log_full, None for the default
        self.name = f"fault {FAULTS.index(fault) + 1} {fault}" + (f"-{log_full}" if log_full else "")

    def say(self, text):
        print(f"soak {self.name}: {text}", flush=True)

    def check(self, ok, what, why=""):
        self.verdict(ok, f"{self.name}: {what}", why)

    def settle(self, px, tr, timeout=30.0):
        """Until every logged session has closed (fault 5: or the fd count
        is back at the baseline and the log has stopped growing) and the
        fd count is steady."""
        end = time.monotonic() + timeout
        last_off = -1
        while time.monotonic() < end:
            tr.poll()
            if not tr.open_sessions():
                break
            if self.fault == "disk" and self.base_fds is not None and \
                    fd_count(px.proc.pid) == self.base_fds and tr.offset == last_off:
                break
            last_off = tr.offset
            time.sleep(0.3)
        last = None
        for _ in harness.deadline_loop(5.0, 0.5):
            n = fd_count(px.proc.pid)
            if n == last:
                break
            last = n
        time.sleep(0.5)
        tr.poll()

    def go(self):
        a = self.args
        self.base_fds = None
        tmpfs = None
        prosody = None
        px = None
        inj = None
        warm = load = None
        try:
            # the proxy's default connect_timeout, and login_timeout at a
            # third of its default: at 100 logins at once Prosody (one core,
            # ~150 logins/s at best) takes up to ~5 s for the upstream's
            # STARTTLS and TLS on this shared 2-core machine
            extra = {"keylog": None, "max_per_addr": str(max(1000, 4 * a.concurrency)),
                     "connect_timeout": "10", "login_timeout": "20"}
            if self.fault == "stop":
                extra.update(connect_timeout=str(a.stop_connect_timeout),
                             login_timeout=str(a.stop_login_timeout))
            if self.fault == "disk":
                tmpfs = Tmpfs(a.tmpfs_mib)
                if tmpfs.error:
                    self.verdict(None, f"{self.name}",
                                 f"cannot mount a tmpfs: {tmpfs.error.splitlines()[0]}")
                    return
                extra["event_log"] = str(tmpfs.dir / "events.jsonl")
                if a.event_log_queue:
                    extra["event_log_queue"] = a.event_log_queue
                if self.log_full:
                    extra["event_log_full"] = self.log_full
            login_timeout = int(extra["login_timeout"])
            answer_timeout = login_timeout + a.answer_margin
            stop_s = max(int(extra["connect_timeout"]), login_timeout) + 2
            post_timeout = a.post_timeout + (stop_s if self.fault == "stop" else 0)

            prosody = FaultProsody(name=f"soak-{self.fault}-prosody", keep=a.keep)
            prosody.start()
            px = harness.Proxy(a.bin, prosody.port, name=f"soak-{self.fault}-proxy",
                               keep=a.keep, extra=extra)
            px.start()
            pid = px.proc.pid
            tr = Tracker(px.keys["event_log"])
            self.say(f"proxy pid {pid}, Prosody {harness.prosody_version()}, concurrency "
                     f"{a.concurrency}, {a.fault_seconds:.0f}s"
                     + (f" or {a.logins} logins" if a.logins else "")
                     + f"; connect_timeout {extra['connect_timeout']}s, login_timeout "
                     f"{login_timeout}s, client answer deadline {answer_timeout}s")

            cfg = self.cfg = LoadConfig(px.port, px.tls_port, a.concurrency, answer_timeout,
                                        post_timeout)
            start_fds = fd_count(pid)
            warm = Load(cfg, seconds=60, target=2 * a.concurrency, label="warm-up")
            warm.start()
            warm.join()
            self.settle(px, tr)
            self.base_fds, base_rss = fd_count(pid), status_kib(pid)
            wn, wok = warm.counts()
            self.say(f"warm-up {wok}/{wn} ok; fds at start {start_fds}, baseline "
                     f"{self.base_fds}; RSS baseline {base_rss} KiB")
            for k, n in sorted(kinds(x for x in warm.results if x["outcome"] != "ok").items(),
                               key=lambda kv: -kv[1])[:6]:
                self.say(f"  warm-up: {n} x {k}")
            if warm.error:
                raise harness.HarnessError(f"warm-up load: {warm.error}")

            if self.fault == "rst":
                cfg.reset_ratio = 0.5
            fn = {
                "hup": lambda: fault_hup(px),
                "kill": lambda: fault_kill(prosody),
                "stop": lambda: fault_stop(prosody, stop_s, a.stop_run_s),
                "rst": lambda: (lambda stop, st: stop.wait()),
                "disk": lambda: fault_disk(tmpfs.dir, a.disk_long_hold
                                           or min(30.0, 0.4 * a.fault_seconds)),
            }[self.fault]()
            sampler = Sampler(pid)
            sampler.start()
            seconds, target = a.fault_seconds, a.logins
            if self.log_full == "refuse":
                # refused connections come back at once: by count the run
                # would be over in seconds; by time it sees the disk full
                # and free in turns
                seconds, target = min(a.fault_seconds, 60.0), None
            load = Load(cfg, seconds=seconds, target=target, label=self.fault)
            inj = Injector(fn)
            load.start()
            inj.start()
            last = time.monotonic()
            while load.is_alive():
                load.join(1.0)
                tr.poll()
                if time.monotonic() - last >= 10:
                    last = time.monotonic()
                    n, ok = load.counts()
                    self.say(f"{time.monotonic() - load.t0:.0f}s: {n} logins, {ok} ok; "
                             f"fds {fd_count(pid)}, RSS {status_kib(pid)} KiB, "
                             f"{len(tr.open_sessions())} open in the log"
                             + ("" if px.alive() else "; PROXY DEAD"))
            inj.stop()
            inj.join(30)
            prosody.sigcont()
            elapsed = (load.t1 or time.monotonic()) - load.t0
            if prosody.proc is None or prosody.proc.poll() is not None:
                prosody.restart()  # the kill loop may have been cut between kill and start
            alive = px.alive()
            if alive:
                self.settle(px, tr, timeout=max(30.0, answer_timeout + 10))
            sampler.stop_flag.set()
            sampler.join()
            after_fds, after_rss = (fd_count(pid), status_kib(pid)) if alive else (None, None)
            ours = {id(x) for x in load.results}
            self.sid_of = {id(x): sid for x, sid in match_clients(warm.results + load.results, tr)
                           if id(x) in ours}
            self.report(load, elapsed, inj, tr, sampler, self.base_fds, base_rss, after_fds,
                        after_rss, alive, px)
            if inj.error:
                self.check(False, "fault injector", inj.error)
            if load.error:
                self.check(False, "load generator", load.error)
            status = px.stop(timeout=15)
            self.check(status == 0 and not px.killed, "proxy exits 0 on SIGTERM",
                       f"status {status}{' (killed)' if px.killed else ''}")
            tr.finish()
            self.log_checks(tr, load.results, warm.results)
            report = px.sanitizer_report()
            self.check(not report, "no sanitizer report",
                       report.strip().splitlines()[0] if report else "")
        except harness.HarnessError as e:
            self.check(False, "harness", str(e).splitlines()[0])
        finally:
            if inj is not None and inj.is_alive():
                inj.stop()
                inj.join(30)
            if px is not None:
                px.stop(timeout=5)
                if tmpfs is not None and Path(px.keys["event_log"]).exists():
                    try:  # out of the tmpfs before it goes, for --keep and diagnostics
                        shutil.copy(px.keys["event_log"], px.dir / "events.jsonl")
                    except OSError:
                        pass
                    px.event_log = px.dir / "events.jsonl"
                if a.keep:
                    if load is not None:  # what each client got, for a later look
                        with open(px.dir / "clients.jsonl", "w") as f:
                            for x in list(warm.results if warm else []) + load.results:
                                f.write(json.dumps(x) + "\n")
                    self.say(f"kept {px.dir} (clients.jsonl: each client's record) and "
                             f"{prosody.dir}")
                px.cleanup()
            if tmpfs is not None:
                tmpfs.close()
            if prosody is not None:
                prosody.stop()

    def report(self, load, elapsed, inj, tr, sampler, base_fds, base_rss, after_fds,
               after_rss, alive, px):
        a = self.args
        rs = load.results
        ok = [x for x in rs if x["outcome"] == "ok"]
        resets = [x for x in rs if x["outcome"] == "reset"]
        plain = [x for x in rs if x["outcome"] != "reset"]
        ms = [x["ms"] for x in ok if "ms" in x]
        any_ms = [x["ms"] for x in plain if x["answered"] and "ms" in x]
        self.say(f"{len(rs)} logins over {elapsed:.1f}s: {len(ok)} ok ({len(ok) / elapsed:.1f}/s), "
                 f"{len(plain) - len(ok)} not ok, {len(resets)} reset on purpose; "
                 f"{len(rs) / elapsed:.1f} attempts/s; success in p50 {pct(ms, 50)} ms, "
                 f"p95 {pct(ms, 95)} ms, max {max(ms or [0])} ms; slowest answer of any kind "
                 f"{max(any_ms or [0])} ms (deadline {int(self.cfg.answer_timeout * 1000)} ms)"
                 + (f" (target {load.target}: "
                    f"{'reached' if len(rs) >= load.target else 'NOT reached'})"
                    if load.target else ""))
        stats = {k: v for k, v in inj.stats.items() if k != "down_ms"}
        if "down_ms" in inj.stats and inj.stats["down_ms"]:
            stats["down_ms p50/max"] = f"{pct(inj.stats['down_ms'], 50)}/{max(inj.stats['down_ms'])}"
        if stats:
            self.say("fault: " + ", ".join(f"{k} {round(v, 1) if isinstance(v, float) else v}"
                                           for k, v in stats.items()))
        for k, n in sorted(kinds([x for x in plain if x["outcome"] != "ok"]).items(),
                           key=lambda kv: -kv[1])[:12]:
            self.say(f"  {n} x {k}")
        if resets:
            by = {}
            for x in resets:
                by[x["detail"]] = by.get(x["detail"], 0) + 1
            self.say("  resets by point: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
        self.say(f"fds baseline {base_fds}, peak {sampler.peak_fds}, after {after_fds}; "
                 f"RSS baseline {base_rss} KiB, peak {sampler.peak_rss} KiB, after {after_rss} KiB")
        self.say(f"event log: {tr.lines} lines, {len(tr.connects)} connect, {len(tr.closes)} "
                 f"close, {len(tr.logins)} login, {len(tr.bad)} not JSON, {len(tr.gaps)} log_gap"
                 + (f" ({tr.gap_events()} events, {len(tr.gap_sessions())}+{tr.gap_more()} "
                    f"sessions)" if tr.gaps else "")
                 + (f"; reload {tr.reloads.count('ok')} ok, {tr.reloads.count('failed')} failed"
                    if tr.reloads else "")
                 + "".join(f"; {n} {k}" for k, n in sorted(tr.other_sid0.items())))

        self.check(alive, "proxy alive after the load", f"exit status {px.proc.poll()}")
        self.check(len(ok) > 0, "some logins succeeded", f"{len(rs)} tried")
        hung = [x for x in rs if x["outcome"] == "hang"]
        self.check(not hung, "no client hung past its deadline",
                   f"{len(hung)} hung: " + "; ".join(f"{n} x {k}" for k, n in
                                                    list(kinds(hung).items())[:4]))
        unanswered = [x for x in plain if not x["answered"] and x["outcome"] != "hang"
                      and not self.refused_ok(x)]
        for x in [x for x in unanswered if "; received" in str(x.get("detail"))][:2]:
            self.say("unanswered client: " + json.dumps(x))
        if unanswered or hung:
            self.diagnose(tr, [self.sid_of[id(x)] for x in unanswered + hung
                               if self.sid_of.get(id(x)) is not None])
        self.check(not unanswered, "every client answered (success, SASL failure or stream error)",
                   f"{len(unanswered)} without: " + "; ".join(
                       f"{n} x {k}" for k, n in sorted(kinds(unanswered).items(),
                                                       key=lambda kv: -kv[1])[:4]))
        early = [x for x in rs if x.get("early_header")]
        if early:
            self.say("a stream opened to a client before its restart header: "
                     + json.dumps(early[0]))
        self.check(not early, "no stream header to a client before its own (RFC 6120 4.2)",
                   f"{len(early)} clients got the proxy's new stream header before they sent "
                   "theirs: " + "; ".join(f"{n} x {k}" for k, n in kinds(early).items()))
        if self.fault in ("hup", "rst") or (self.fault == "disk" and self.log_full != "refuse"):
            # the upstream is fine: every login that was not reset must succeed
            failed = [x for x in plain if x["outcome"] != "ok"]
            self.check(len(failed) <= a.max_failures, f"every login ok ({len(ok)}/{len(plain)})",
                       f"{len(failed)} not ok, {a.max_failures} tolerated")
            if len(failed) > a.max_failures:
                tr.poll()
                self.diagnose(tr, [self.sid_of[id(x)] for x in failed
                                   if self.sid_of.get(id(x)) is not None])
        else:
            dropped = [x for x in plain if x["answered"] and x["outcome"] in ("eof", "error")]
            if dropped:
                self.say(f"note: {len(dropped)} sessions closed after <success/> without a "
                         f"stream error (the upstream went away after login): "
                         + "; ".join(f"{n} x {k}" for k, n in list(kinds(dropped).items())[:3]))
        if self.fault == "hup":
            st = inj.stats
            self.check(tr.reloads.count("ok") == st.get("good") and
                       tr.reloads.count("failed") == st.get("bad"),
                       "a reload event per SIGHUP (ok for good files, failed for bad ones)",
                       f"sent {st.get('good')} good, {st.get('bad')} bad; logged "
                       f"{tr.reloads.count('ok')} ok, {tr.reloads.count('failed')} failed")
        if alive:
            self.check(after_fds is not None and after_fds <= base_fds + a.fd_margin,
                       "fds back to baseline",
                       f"{after_fds} after, baseline {base_fds}, margin {a.fd_margin}")
            margin = int(a.rss_margin_mib * 1024)
            if sanitized(a.bin):
                self.verdict(None, f"{self.name}: RSS back to baseline",
                             "a sanitizer build: its quarantine keeps freed memory; the leak "
                             "check is LeakSanitizer's at exit")
            else:
                self.check(after_rss is not None and after_rss <= base_rss + margin,
                           "RSS back to baseline",
                           f"{after_rss} KiB after, baseline {base_rss} KiB, margin {margin} KiB")

    def refused_ok(self, x):
        """With event_log_full = refuse a connection may be closed before
        any answer while the log cannot be written."""
        return (self.log_full == "refuse" and x["outcome"] in ("eof", "error")
                and x["stage"] in ("features", "tls"))

    def log_checks(self, tr, results, earlier=()):
        """The event log, after the proxy exited: against the contract."""
        bad = tr.bad
        self.check(not bad, "every event log line a whole JSON object",
                   f"{len(bad)} not: first {bad[0][:120]!r}" if bad else "")
        self.check(len(tr.stops) == 1, "the stop event logged", f"{len(tr.stops)} stop events")
        disk = self.fault == "disk"
        gap_s, windows = tr.gap_sessions(), tr.open_gap_windows()
        known = sorted(tr.connect_ts.items())  # (sid, ts), sids rise with time
        keys = [k for k, _ in known]

        def covered(sid):
            """In a log_gap's sessions, or unnamed by a gap whose list was
            cut short, lost in its window: a session whose connect is
            logged lost a line after that; one on no line connected between
            its logged neighbours."""
            if sid in gap_s:
                return True
            if sid in tr.connect_ts:
                t = tr.connect_ts[sid]
                return any(until >= t for _, until in windows)
            i = bisect.bisect_left(keys, sid)
            lo = known[i - 1][1] if i > 0 else ""
            hi = known[i][1] if i < len(known) else "~"
            return any(since <= hi and until >= lo for since, until in windows)

        hung = [s for s in tr.connects if s not in tr.closes and not (disk and covered(s))]
        self.check(not hung, "every connect has its close" + (" or is in a log_gap" if disk else ""),
                   f"{len(hung)} sessions without: sids {sorted(hung)[:8]}")
        nologin = [s for s in tr.auths if s not in tr.logins and not (disk and covered(s))]
        self.check(not nologin, "every session with an auth has its login record"
                   + (" or is in a log_gap" if disk else ""),
                   f"{len(nologin)} without: sids {sorted(nologin)[:8]}")
        # per client: the client's own session (by its port) and, if it
        # sent <auth> and did not reset, its login record
        # (the warm-up's clients are in the log too, on the same ports)
        ours = {id(x) for x in results}
        pairs = [(x, sid) for x, sid in match_clients(list(earlier) + list(results), tr)
                 if id(x) in ours]
        self.sid_of = {id(x): sid for x, sid in pairs}
        lost = [x for x, sid in pairs if sid is None]
        # (a stream error or a reset may cross the <auth> in flight: the
        # proxy never read it; those are covered by the log-side check)
        nolog = [(x, sid) for x, sid in pairs if sid is not None and x["auth_sent"]
                 and x["outcome"] in ("ok", "sasl_failure") and sid not in tr.logins]
        if disk:
            top = max([tr.connects and max(tr.connects) or 0, max(tr.seen or {0})])
            absent = [s for s in range(1, top + 1) if s not in tr.seen and not covered(s)]
            self.check(not absent, "every session in the log or counted in a log_gap",
                       f"{len(absent)} sids on no line and in no log_gap: {absent[:8]}")
            # (a client whose connect line was lost has a sid on no line:
            # the check above covers it)
            nolog = [(x, sid) for x, sid in nolog if not covered(sid)]
            # clients closed at accept have no sid: each has its refused
            # event, or its line was lost (counted by a log_gap)
            refused = sum(n for k, n in tr.other_sid0.items() if k.startswith("refused"))
            nosid = [x for x in lost if x["outcome"] != "reset"]
            self.check(len(nosid) <= refused + tr.gap_events(),
                       "every client closed at accept counted (a refused event or a log_gap)",
                       f"{len(nosid)} clients with no session, {refused} refused events, "
                       f"{tr.gap_events()} events lost")
        else:
            # a client that reset right after connect may be gone before accept
            lost = [x for x in lost if x["outcome"] != "reset"]
            self.check(not lost, "every client's session in the log (by its port)",
                       f"{len(lost)} clients with no connect event")
        self.check(not nolog, "every client answered on its <auth> has its login record"
                   + (" or a log_gap" if disk else ""),
                   f"{len(nolog)} without, e.g. sid {nolog[0][1] if nolog else ''}")
        if disk and tr.stops and "events_lost" in tr.stops[-1]:
            lost_n = tr.stops[-1].get("events_lost")
            self.check(lost_n == tr.gap_events(), "stop's events_lost equals the log_gap total",
                       f"stop says {lost_n}, log_gap events add up to {tr.gap_events()}")
        elif disk:
            self.say("note: the stop event has no events_lost field (not in this build)")
        for x, sid in nolog[:3]:
            self.say(f"client of sid {sid}: " + json.dumps(x))
        self.diagnose(tr, hung + nologin + [sid for _, sid in nolog])

    def diagnose(self, tr, sids):
        """The events of the first few sessions a check failed on."""
        sids = sorted(set(sids))[:3]
        if sids:
            self.say(f"events of sids {sids}:")
            for line in tr.events_of(sids):
                print("    " + line, flush=True)


def parse_faults(spec):
    """'all', or a comma list of numbers (1-5) or names."""
    if spec in (None, "", "all"):
        return list(FAULTS)
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item.isdigit() and 1 <= int(item) <= len(FAULTS):
            out.append(FAULTS[int(item) - 1])
        elif item in FAULTS:
            out.append(item)
        else:
            raise ValueError(f"unknown fault {item!r} (1-5 or {', '.join(FAULTS)})")
    return out


def main(args, verdict):
    """Runs each fault of args.faults in turn; verdict(ok, name, why) prints
    PASS/FAIL (ok None: SKIP)."""
    faults = parse_faults(args.faults)
    print(f"soak --faults: {', '.join(faults)}; {args.fault_seconds:.0f}s each"
          + (f" or {args.logins} logins" if args.logins else "")
          + f", concurrency {args.concurrency}, proxy {args.bin}", flush=True)
    for fault in faults:
        if fault == "disk" and args.event_log_full == "both":
            Run(fault, args, verdict).go()
            Run(fault, args, verdict, "refuse").go()
        else:
            Run(fault, args, verdict, args.event_log_full if fault == "disk" else None).go()
