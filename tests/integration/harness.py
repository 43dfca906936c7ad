"""Integration test harness: private Prosody servers, the proxy, its event log.

Everything runs on 127.0.0.1 on free ports, from files written into temporary
directories; nothing outside the repository and /tmp is read or written
(Prosody's system config in /etc/prosody is never touched).

Waiting is always "poll a condition until a deadline", never a fixed sleep:
a listening port is seen in /proc/net/tcp (no probe connection that the
proxy would have to log as a session), an event is seen in the event log.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CERTS = REPO / "certs" / "lab"
CA = CERTS / "ca.pem"
# Debian's interpreter: the python3 first on PATH may lack python3-slixmpp.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
DOMAIN = "lab.test"
ANON_DOMAIN = "anon.lab.test"
POLL = 0.02  # seconds between polls: short against the ~10 ms a login step takes


class HarnessError(Exception):
    """The test environment itself failed (not the code under test)."""


def deadline_loop(timeout, interval=POLL):
    """Yields until timeout seconds have passed; the caller breaks when done."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= end:
            return
        time.sleep(interval)


def proc_tree(pid):
    """pid and all its descendants (with workers = N the proxy is a
    supervisor and its workers, which hold the sessions): what a test that
    reads a proxy's memory, descriptors, sockets or CPU must read."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def worker_pids(pid):
    """The proxy's processes that serve sessions: its children (workers),
    or itself when it has none (workers = 1)."""
    tree = proc_tree(pid)
    return tree[1:] or tree


def wait_until(cond, timeout, interval=POLL):
    """Polls cond() until it is true or the deadline passes; returns its
    last value."""
    for _ in deadline_loop(timeout, interval):
        value = cond()
        if value:
            return value
    return cond()


# ---------------------------------------------------------------- ports

_given_ports = set()


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now (bind port 0 and read it
    back). Never the same port twice in one run, so two servers started in
    a row cannot be handed the same number before either binds it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise HarnessError("no free port")


def _listening_ports():
    """Local ports in LISTEN state, from /proc/net/tcp{,6}."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_listening(ports, timeout, proc=None, what="server"):
    """Waits until every port in ports is in LISTEN state. Raises
    HarnessError if proc exits first or the deadline passes."""
    ports = set(ports)
    for _ in deadline_loop(timeout):
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what} exited with status {proc.returncode} before listening")
        if ports <= _listening_ports():
            return
    raise HarnessError(f"{what} not listening on {sorted(ports)} after {timeout}s")


def port_refusing():
    """A port on 127.0.0.1 that refuses connections (free, not listened on)."""
    return free_port()


# ---------------------------------------------------------------- processes


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM if the test runner dies (even by
    SIGKILL), so no Prosody or proxy outlives a killed CI job."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(proc, timeout=10.0, sig=signal.SIGTERM):
    """Sends sig, waits up to timeout, then SIGKILL. Returns the exit status
    and whether it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


def tail(path, limit=4000):
    """The end of a text file, for failure messages."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    text = data[-limit:].decode("utf-8", "replace")
    return text if len(data) <= limit else "..." + text


# ---------------------------------------------------------------- Prosody


def prosody_version():
    """Debian's package version (`prosody --version` would start a server)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lua_str(s):
    """A Lua string literal."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


CYRUS_MODULE = Path("/usr/lib/prosody/modules/mod_auth_cyrus")


class Prosody:
    """A private Prosody 0.12 on 127.0.0.1.

    variant options:
      require_encryption  c2s_require_encryption (default True)
      allow_plain         allow_unencrypted_plain_auth (default False)
      cert                "server" (trusted lab cert) or "untrusted"
      cyrus               Cyrus SASL backend on lab.test (DIGEST-MD5, CRAM-MD5)
      cyrus_patch         fix Debian's mod_auth_cyrus (default); False keeps
                          its garbage <success> payloads, as malformed input
      tls12               TLS 1.2 only: then Prosody offers SCRAM-SHA-1-PLUS
                          (tls-unique does not exist in TLS 1.3)
      modules             extra modules_enabled, e.g. ("legacyauth",
                          "register_ibr"): XEP-0078 iq-auth and in-band
                          registration, routes a hostile client tries
      iterations          default_iteration_count (PBKDF2) for the accounts:
                          a higher count makes each password check slower,
                          so attempts sent at once are surely all in flight
                          before the server's first answer
      debug               log at debug level (as XI_DEBUG=1 does): Prosody
                          then logs every element it receives
                          ("Received[c2s_unauthed]: <auth ...>"), the
                          witness that an attempt did or did not reach it
      plugin_paths        extra directories Prosody loads modules from
                          (before its own), e.g. the suite's
                          prosody-plugins/ with its copy of mod_sasl2
      tickets             TLS session tickets on (no_ticket = false): Prosody's
                          default sets no_ticket, and its stateful tickets
                          then never resume; with them a client can
                          resume (the proxy's upstream leg does)
    users: {localpart: password} registered on lab.test before start.
    """

    def __init__(self, users, require_encryption=True, allow_plain=False,
                 cert="server", cyrus=False, cyrus_patch=True, tls12=False,
                 modules=(), debug=False, iterations=None, plugin_paths=(), name="prosody",
                 keep=False, tickets=False):
        self.users = dict(users)
        self.require_encryption = require_encryption
        self.allow_plain = allow_plain
        self.cert = cert
        self.cyrus = cyrus
        self.cyrus_patch = cyrus_patch
        self.tls12 = tls12
        self.modules = tuple(modules)
        self.debug = debug
        self.iterations = iterations
        self.plugin_paths = tuple(plugin_paths)
        self.tickets = tickets
        self.name = name
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix=f"xi-{name}-"))
        self.config = self.dir / "prosody.cfg.lua"
        self.log = self.dir / "prosody.log"
        self.port = free_port()
        self.tls_port = free_port()
        self.proc = None
        self._stderr = None
        self.env = dict(os.environ)

    # The Cyrus backend: a private sasldb and SASL config found through
    # SASL_CONF_PATH, and a patched private copy of Debian's mod_auth_cyrus
    # (two bugs, see _patch_cyrus) loaded through plugin_paths.
    def _setup_cyrus(self):
        if not (CYRUS_MODULE / "sasl_cyrus.lua").exists():
            raise HarnessError("mod_auth_cyrus not installed (prosody-modules)")
        if shutil.which("saslpasswd2") is None:
            raise HarnessError("saslpasswd2 not installed (sasl2-bin)")
        plugins = self.dir / "plugins"
        shutil.copytree(CYRUS_MODULE, plugins / "mod_auth_cyrus")
        if self.cyrus_patch:
            _patch_cyrus(plugins / "mod_auth_cyrus" / "sasl_cyrus.lua")
        sasl = self.dir / "sasl"
        sasl.mkdir()
        (sasl / "prosody.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            f"sasldb_path: {self.dir / 'sasldb2'}\n"
            "mech_list: DIGEST-MD5 CRAM-MD5 SCRAM-SHA-1 PLAIN\n")
        self.env["SASL_CONF_PATH"] = str(sasl)
        for user, password in self.users.items():
            r = subprocess.run(
                ["saslpasswd2", "-p", "-c", "-f", str(self.dir / "sasldb2"),
                 "-a", "prosody", "-u", DOMAIN, user],
                input=password, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise HarnessError(f"saslpasswd2 {user}: {r.stderr.strip()}")
        return plugins

    def write_config(self, plugins=None):
        cert = CERTS / f"{self.cert}.pem"
        key = CERTS / f"{self.cert}.key"
        for f in (cert, key):
            if not f.exists():
                raise HarnessError(f"{f} missing: run `make -C certs`")
        proto = ' protocol = "tlsv1_2";' if self.tls12 else ""
        # Prosody merges these with its default options, no_ticket among them
        opts = " options = { no_ticket = false };" if self.tickets else ""
        ssl = f"{{ certificate = {lua_str(cert)}; key = {lua_str(key)};{proto}{opts} }}"
        level = "debug" if self.debug or os.environ.get("XI_DEBUG") else "info"
        modules = ["roster", "saslauth", "tls", "disco", "ping", "posix"] + list(self.modules)
        lines = [
            "-- written by tests/integration/harness.py",
            "run_as_root = true",
            f"pidfile = {lua_str(self.dir / 'prosody.pid')}",
            f"data_path = {lua_str(self.dir / 'data')}",
            f"log = {{ {level} = {lua_str(self.log)} }}",
            "modules_enabled = { " + "; ".join(lua_str(m) for m in modules) + " }",
            'modules_disabled = { "s2s" }',
            "s2s_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            'interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            f"c2s_direct_tls_ports = {{ {self.tls_port} }}",
            'c2s_direct_tls_interfaces = { "127.0.0.1" }',
            f"c2s_require_encryption = {str(self.require_encryption).lower()}",
            f"allow_unencrypted_plain_auth = {str(self.allow_plain).lower()}",
            f"ssl = {ssl}",
            f"c2s_direct_tls_ssl = {ssl}",
            # an empty directory: no certificate auto-discovery
            f"certificates = {lua_str(self.dir / 'certs')}",
        ]
        paths = ([plugins] if plugins else []) + list(self.plugin_paths)
        if paths:
            lines.append("plugin_paths = { " + "; ".join(lua_str(p) for p in paths) + " }")
        if self.iterations:
            lines.append(f"default_iteration_count = {int(self.iterations)}")
        lines += ["", f"VirtualHost {lua_str(DOMAIN)}", f"  ssl = {ssl}"]
        if self.cyrus:
            lines += [
                '  authentication = "cyrus"',
                '  cyrus_service_name = "xmpp"',
                f"  cyrus_service_realm = {lua_str(DOMAIN)}",
                f"  cyrus_server_fqdn = {lua_str(DOMAIN)}",
                '  cyrus_application_name = "prosody"',
                "  disable_sasl_mechanisms = {}",
            ]
        else:
            lines.append('  authentication = "internal_hashed"')
        lines += ["", f"VirtualHost {lua_str(ANON_DOMAIN)}", f"  ssl = {ssl}",
                  '  authentication = "anonymous"', ""]
        self.config.write_text("\n".join(lines))

    def register(self):
        """Creates the accounts. prosodyctl costs ~0.3 s per call (Lua start),
        so they run in parallel; they only write distinct files."""
        procs = []
        for user, password in self.users.items():
            procs.append((user, subprocess.Popen(
                ["prosodyctl", "--config", str(self.config), "register", user, DOMAIN, password],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)))
        for user, p in procs:
            out, _ = p.communicate(timeout=60)
            if p.returncode != 0:
                raise HarnessError(f"prosodyctl register {user}: {out.strip()}")

    def start(self, timeout=20.0):
        (self.dir / "certs").mkdir(exist_ok=True)
        plugins = self._setup_cyrus() if self.cyrus else None
        self.write_config(plugins)
        if not self.cyrus:
            self.register()
        self._stderr = open(self.dir / "prosody.stderr", "wb")
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        try:
            wait_listening([self.port, self.tls_port], timeout, self.proc, "prosody")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}\n{tail(self.dir / 'prosody.stderr')}\n{tail(self.log)}")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=10.0)
            self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def diagnostics(self):
        return f"--- prosody log ({self.log}):\n{tail(self.log, 3000)}"


def _patch_cyrus(path):
    """Fixes Debian's sasl_cyrus.lua in a private copy (LAB.md):
    1. server_start gets `message or ""`: an absent initial response becomes
       an empty one, which breaks CRAM-MD5 (the server must speak first);
    2. after server_step succeeds on an empty final message (DIGEST-MD5,
       SCRAM), lua-cyrussasl returns an uninitialised output buffer and
       <success> carries kilobytes of garbage: return no data then."""
    src = path.read_text()
    old_start = 'cyrussasl.server_start(self.cyrus, self.selected, message or "")'
    old_step = 'err, data = cyrussasl.server_step(self.cyrus, message or "")'
    if old_start not in src or old_step not in src:
        raise HarnessError(f"{path}: unknown sasl_cyrus.lua version, cannot patch")
    patched = src.replace(old_start, "cyrussasl.server_start(self.cyrus, self.selected, message)")
    patched = patched.replace(
        old_step,
        old_step + '\n\t\tif err == 0 and (message or "") == "" then data = nil end')
    path.write_text(patched)


# ---------------------------------------------------------------- the proxy


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer")


class Proxy:
    """One xmpp-inspect process with its own config, event log and key log
    in a temporary directory.

    Keys default to the lab setup (listen, listen_tls, upstream, upstream_tls,
    upstream_verify, upstream_ca, cert, key, event_log, keylog); extra keys
    override them, None removes a key.
    """

    def __init__(self, binary, upstream_port, upstream_tls="starttls", extra=None,
                 name="proxy", keep=False, upstream_host="127.0.0.1"):
        self.binary = str(binary)
        self.dir = Path(tempfile.mkdtemp(prefix=f"xi-{name}-"))
        self.keep = keep
        self.port = free_port()
        self.tls_port = free_port()
        self.event_log = self.dir / "events.jsonl"
        self.keylog = self.dir / "keys.log"
        self.stderr_path = self.dir / "stderr.log"
        self.stdout_path = self.dir / "stdout.log"
        self.config = self.dir / "xmpp-inspect.conf"
        self.keys = {
            "listen": f"127.0.0.1:{self.port}",
            "listen_tls": f"127.0.0.1:{self.tls_port}",
            "upstream": f"{upstream_host}:{upstream_port}",
            "upstream_tls": upstream_tls,
            "upstream_verify": "yes",
            "upstream_ca": str(CA),
            "cert": str(CERTS / "server.pem"),
            "key": str(CERTS / "server.key"),
            "event_log": str(self.event_log),
            "keylog": str(self.keylog),
        }
        if os.environ.get("XI_TRANSCRIPT_ALL"):
            # every case with transcripts on: the runner's secret check then
            # reads every transcript the suite's hostile clients produced
            tdir = self.dir / "all-transcripts"
            tdir.mkdir(mode=0o700)
            self.keys["transcript_dir"] = str(tdir)
        for k, v in (extra or {}).items():
            if v is None:
                self.keys.pop(k, None)
            else:
                self.keys[k] = v
        self.proc = None
        self.exit_status = None
        self.killed = False
        self.events = EventLog(self.event_log)

    def write_config(self):
        lines = ["# written by tests/integration/harness.py"]
        lines += [f"{k} = {v}" for k, v in self.keys.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"proxy binary {self.binary} missing or not executable (run make)")
        self.write_config()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        ports = []
        if "listen" in self.keys:
            ports.append(self.port)
        if "listen_tls" in self.keys:
            ports.append(self.tls_port)
        try:
            wait_listening(ports, timeout, self.proc, "xmpp-inspect")
            # the supervisor binds the ports before it forks: a case that
            # reads the workers' /proc (memory, sockets, RSS) needs them up
            n = self.workers()
            if n > 1 and not wait_until(lambda: len(proc_tree(self.proc.pid)) > n, timeout):
                raise HarnessError(f"{n} workers not running: {proc_tree(self.proc.pid)}")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}\n--- proxy stderr:\n{tail(self.stderr_path)}")
        return self

    def workers(self):
        """The worker processes this proxy runs (the key, else the online
        cores as the proxy's default; 1: no supervisor)."""
        try:
            return max(1, int(self.keys.get("workers") or min(64, os.sysconf("SC_NPROCESSORS_ONLN"))))
        except ValueError:
            return 1

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def reload(self, **changes):
        """Rewrites the config with changes (None removes a key) and sends
        SIGHUP."""
        for k, v in changes.items():
            if v is None:
                self.keys.pop(k, None)
            else:
                self.keys[k] = v
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit status (SIGKILL after timeout)."""
        if self.proc is not None and self.exit_status is None:
            self.exit_status, self.killed = stop_process(self.proc, timeout)
            self._out.close()
            self._err.close()
        return self.exit_status

    def cleanup(self):
        self.stop(timeout=2.0)
        # XI_KEEP_LOGS=DIR: every event log and key log the suite made is
        # kept there, for the report's test and the suite-wide secret grep.
        keep_logs = os.environ.get("XI_KEEP_LOGS")
        if keep_logs:
            os.makedirs(keep_logs, exist_ok=True)
            for f in (self.event_log, self.keylog):
                if f.exists():
                    shutil.copy(f, Path(keep_logs) / f"{self.dir.name}-{f.name}")
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stderr(self):
        return tail(self.stderr_path, 100000)

    def sanitizer_report(self):
        """The sanitizer's report in stderr, or ''."""
        text = self.stderr()
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return ""

    def written_files(self):
        """Every file the proxy may have written (everything under its dir,
        transcripts included, but the config we wrote)."""
        return [p for p in self.dir.rglob("*") if p.is_file() and p != self.config]

    def diagnostics(self):
        return (f"--- proxy config:\n{self.config.read_text() if self.config.exists() else ''}"
                f"--- proxy stderr:\n{tail(self.stderr_path, 3000)}\n"
                f"--- event log:\n{tail(self.event_log, 4000)}")


def secret_forms(password, users=()):
    """Byte strings that would betray password in a log: the password, its
    hex, and the base64 PLAIN payloads that carry it."""
    pw = password.encode()
    forms = {pw, pw.hex().encode()}
    for user in list(users) + [""]:
        for authzid in ("", f"{user}@{DOMAIN}"):
            forms.add(base64.b64encode(f"{authzid}\0{user}\0{password}".encode()))
    forms.add(base64.b64encode(pw))
    return forms


def find_secrets(files, password, users=()):
    """Names of files containing any form of password."""
    bad = []
    forms = secret_forms(password, users)
    for f in files:
        try:
            data = Path(f).read_bytes()
        except OSError:
            continue
        for form in forms:
            if form in data:
                bad.append(f"{Path(f).name} contains {form[:12]!r}...")
                break
    return bad


# ---------------------------------------------------------------- event log


class EventLog:
    """Reads the proxy's JSON-lines event log as it grows."""

    def __init__(self, path):
        self.path = Path(path)
        self.bad_lines = []

    def read(self):
        """All complete events so far. A line that is not a JSON object is
        recorded in bad_lines (a contract violation the cases check)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        events = []
        self.bad_lines = []
        lines = data.split(b"\n")
        for raw in lines[:-1]:  # the last piece is incomplete (or empty)
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw)
            except ValueError:
                self.bad_lines.append(raw[:200])
                continue
            if not isinstance(ev, dict):
                self.bad_lines.append(raw[:200])
                continue
            events.append(ev)
        return events

    def wait_for(self, pred, timeout=5.0):
        """The first event for which pred(ev) is true, polling until the
        deadline; None if none came."""
        for _ in deadline_loop(timeout):
            for ev in self.read():
                if pred(ev):
                    return ev
        return None

    def wait(self, event, timeout=5.0, **fields):
        """wait_for an event by name whose fields equal the given values."""
        return self.wait_for(lambda ev: match(ev, event, **fields), timeout)

    def find(self, event, **fields):
        return [ev for ev in self.read() if match(ev, event, **fields)]


def match(ev, event=None, **fields):
    if event is not None and ev.get("event") != event:
        return False
    return all(ev.get(k) == v for k, v in fields.items())


# ---------------------------------------------------------------- the client


def run_client(jid, password, port, host="127.0.0.1", mech=None, direct_tls=False,
               no_tls=False, ca=CA, anonymous=False, timeout=15.0, extra=()):
    """Runs client.py (slixmpp) and returns its JSON outcome dict, with
    "stderr" added when it failed."""
    cmd = [PYTHON, str(HERE / "client.py"), "--jid", jid, "--password", password,
           "--host", host, "--port", str(port), "--timeout", str(timeout)]
    if mech:
        cmd += ["--mech", mech]
    if direct_tls:
        cmd.append("--direct-tls")
    if no_tls:
        cmd.append("--no-tls")
    if ca:
        cmd += ["--ca", str(ca)]
    if anonymous:
        cmd.append("--anonymous")
    cmd += list(extra)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "client.py did not exit"}
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"ok": False, "error": f"no JSON from client.py (status {r.returncode})"}
    if not result.get("ok"):
        result["stderr"] = r.stderr[-3000:]
    return result


# ---------------------------------------------------------------- ejabberd, HAProxy
#
# Two more real servers, for upstream_proxy_protocol (issue 12): ejabberd
# reads a PROXY header on a listener with use_proxy_protocol (v1 and v2), so
# its own log, its session table and mod_fail2ban show which address it
# took from ours; HAProxy (`bind ... accept-proxy`) is an independent parser
# of the same bytes.


class ServerUnavailable(HarnessError):
    """A server this machine cannot run (not installed, not root): cases
    that need it SKIP rather than FAIL."""


def package_version(name):
    """Debian's version of an installed package, or ''."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _group_alive(pgid):
    """True while any process is in process group pgid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # after "pid (comm)": state ppid pgrp ...; a zombie has exited
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


EJABBERDCTL = "/usr/sbin/ejabberdctl"
EJABBERD_USER = "ejabberd"

# Runs ejabberdctl foreground as the wrapper's child; the wrapper is the
# process group leader and gets SIGTERM if the test runner dies
# (PR_SET_PDEATHSIG), and then passes it to the whole group, beam.smp
# included, which stops cleanly on SIGTERM (ejabberdctl's bash would die
# alone and leave the Erlang VM running).
_EJABBERD_WRAPPER = 'trap "trap - TERM INT; kill -TERM 0" TERM INT; "$@" & wait $!'


class Ejabberd:
    """A private ejabberd (Debian 23.01) on 127.0.0.1.

    Everything is in one directory under /tmp owned by user ejabberd (the
    server runs as that user and must be able to traverse its files):
    ejabberd.yml, ejabberdctl.cfg (a node name of its own, Erlang
    distribution on a free port of 127.0.0.1 without epmd), inetrc, the
    Erlang cookie (HOME is this directory, so /var/lib/ejabberd is never
    used), the certificates (copied from certs/lab: the key there is
    readable by root only), the Mnesia spool and the logs.

    Listeners, all ejabberd_c2s on 127.0.0.1:
      port        STARTTLS required, use_proxy_protocol: true
      tls_port    Direct TLS, use_proxy_protocol: true
      plain_port  STARTTLS required, no PROXY header (the baseline)
    Modules: mod_admin_extra (connected_users_info), mod_fail2ban
    (c2s_max_auth_failures, c2s_auth_ban_lifetime seconds), roster, disco,
    ping. Accounts: users {localpart: password} on lab.test, registered
    with `ejabberdctl register` once it listens.

    Start-up: ~2.5 s to listen, then ~1 s per ejabberdctl call (each starts
    an Erlang VM); the accounts are registered in parallel. Share one.
    """

    def __init__(self, users, max_auth_failures=3, ban_lifetime=60, name="ejabberd",
                 keep=False):
        self.users = dict(users)
        self.max_auth_failures = int(max_auth_failures)
        self.ban_lifetime = int(ban_lifetime)
        self.name = name
        self.keep = keep
        self.proc = None
        self.start_seconds = None
        self._out = None
        why = ejabberd_unavailable()
        if why:
            raise ServerUnavailable(why)
        import pwd
        pw = pwd.getpwnam(EJABBERD_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix=f"xi-{name}-", dir="/tmp"))
        self.spool = self.dir / "spool"
        self.logs = self.dir / "logs"
        self.log = self.logs / "ejabberd.log"
        self.error_log = self.logs / "error.log"
        self.config = self.dir / "ejabberd.yml"
        self.port = free_port()
        self.tls_port = free_port()
        self.plain_port = free_port()
        self.dist_port = free_port()
        self.node = f"xi-{os.urandom(4).hex()}@localhost"

    def _env(self):
        # Nothing from the caller's environment: ejabberdctl prefers
        # EJABBERD_CONFIG_PATH, SPOOL_DIR, ERL_* ... from there over its
        # own defaults.
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir),
                "LANG": "C.UTF-8", "USER": EJABBERD_USER, "LOGNAME": EJABBERD_USER}

    def _ctl_args(self):
        return [EJABBERDCTL, "--config-dir", str(self.dir), "--logs", str(self.logs),
                "--spool", str(self.spool)]

    def write_config(self):
        for f in (CERTS / "server.pem", CERTS / "server.key", CA):
            if not f.exists():
                raise HarnessError(f"{f} missing: run `make -C certs`")
        self.spool.mkdir()
        self.logs.mkdir()
        (self.dir / "contrib").mkdir()
        cert = self.dir / "server.pem"
        cert.write_bytes((CERTS / "server.pem").read_bytes() + (CERTS / "server.key").read_bytes())
        cert.chmod(0o600)
        shutil.copy(CA, self.dir / "ca.pem")
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        cookie.chmod(0o400)
        (self.dir / "inetrc").write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        (self.dir / "ejabberdctl.cfg").write_text(
            "# written by tests/integration/harness.py\n"
            f"ERLANG_NODE={self.node}\n"
            'ERL_OPTIONS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
            f"ERL_DIST_PORT={self.dist_port}\n"
            "EJABBERD_BYPASS_WARNINGS=true\n"
            f"CONTRIB_MODULES_PATH={self.dir / 'contrib'}\n"
            f"CONTRIB_MODULES_CONF_DIR={self.dir / 'contrib'}\n")

        def c2s(port, **opts):
            lines = ["  -", f"    port: {port}", '    ip: "127.0.0.1"',
                     "    module: ejabberd_c2s", "    access: c2s"]
            lines += [f"    {k}: {str(v).lower()}" for k, v in opts.items()]
            return lines

        lines = [
            "# written by tests/integration/harness.py",
            "loglevel: info",
            "log_rotate_count: 0",
            "hide_sensitive_log_data: false",
            "hosts:",
            f'  - "{DOMAIN}"',
            "certfiles:",
            f'  - "{cert}"',
            f'ca_file: "{self.dir / "ca.pem"}"',
            "acme:",
            "  auto: false",
            "auth_method: internal",
            "auth_password_format: scram",
            "s2s_access: none",
            "listen:",
            *c2s(self.port, starttls_required=True, use_proxy_protocol=True),
            *c2s(self.tls_port, tls=True, use_proxy_protocol=True),
            *c2s(self.plain_port, starttls_required=True),
            "acl:",
            "  local:",
            '    user_regexp: ""',
            "access_rules:",
            "  local:",
            "    allow: local",
            "  c2s:",
            "    allow: all",
            "api_permissions:",
            '  "console commands":',
            "    from:",
            "      - ejabberd_ctl",
            "    who: all",
            '    what: "*"',
            "modules:",
            "  mod_admin_extra: {}",
            "  mod_fail2ban:",
            f"    c2s_max_auth_failures: {self.max_auth_failures}",
            f"    c2s_auth_ban_lifetime: {self.ban_lifetime}",
            "  mod_roster: {}",
            "  mod_disco: {}",
            "  mod_ping: {}",
            "",
        ]
        self.config.write_text("\n".join(lines))
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                os.chown(os.path.join(root, n), self.uid, self.gid)
        os.chown(self.dir, self.uid, self.gid)

    def ctl(self, *args, timeout=30.0, check=True):
        """Runs `ejabberdctl ARGS` against this node (as user ejabberd);
        returns its stdout. Each call costs ~1 s (an Erlang VM)."""
        p = self._ctl_popen(args)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise HarnessError(f"ejabberdctl {' '.join(args)}: no answer in {timeout}s")
        if check and p.returncode != 0:
            raise HarnessError(f"ejabberdctl {' '.join(args)}: status {p.returncode}: {out.strip()}")
        return out

    def _ctl_popen(self, args):
        return subprocess.Popen(self._ctl_args() + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self._env(), cwd=self.spool, user=self.uid, group=self.gid,
                                extra_groups=[], preexec_fn=_die_with_parent)

    def register(self):
        procs = [(u, self._ctl_popen(["register", u, DOMAIN, pw])) for u, pw in self.users.items()]
        for user, p in procs:
            out, _ = p.communicate(timeout=60)
            if p.returncode != 0:
                raise HarnessError(f"ejabberdctl register {user}: {out.strip()}")

    def start(self, timeout=30.0):
        t0 = time.monotonic()
        self.write_config()
        self._out = open(self.dir / "ejabberd.stdout", "wb")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", _EJABBERD_WRAPPER, "xi-ejabberd"] + self._ctl_args() + ["foreground"],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            env=self._env(), cwd=self.spool, user=self.uid, group=self.gid, extra_groups=[],
            start_new_session=True, preexec_fn=_die_with_parent)
        try:
            wait_listening([self.port, self.tls_port, self.plain_port], timeout, self.proc,
                           "ejabberd")
            self.register()
        except (HarnessError, subprocess.SubprocessError) as e:
            diag = self.diagnostics()
            self.stop()
            raise HarnessError(f"{e}\n{diag}")
        self.start_seconds = time.monotonic() - t0
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM to the whole process group (the Erlang VM stops cleanly
        in ~0.1 s), SIGKILL after timeout."""
        if self.proc is not None:
            pgid = self.proc.pid
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_until(lambda: not _group_alive(pgid), timeout):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_until(lambda: not _group_alive(pgid), 5)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self._out:
            self._out.close()
            self._out = None
        if not self.keep and getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ what it saw

    def connected_users_info(self):
        """`ejabberdctl connected_users_info` (mod_admin_extra): one dict per
        session with jid, connection, ip, port, priority, node, uptime,
        status, resource, statustext."""
        keys = ("jid", "connection", "ip", "port", "priority", "node", "uptime", "status",
                "resource", "statustext")
        rows = []
        for line in self.ctl("connected_users_info").splitlines():
            if line.strip():
                rows.append(dict(zip(keys, line.split("\t"))))
        return rows

    def unban(self, addr):
        """mod_fail2ban's unban_ip; returns how many entries it removed."""
        out = self.ctl("unban_ip", addr).strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError):
            raise HarnessError(f"unban_ip {addr}: {out!r}")

    def log_mark(self):
        """The log's current size: log_since(mark) is what came after."""
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark=0):
        try:
            with open(self.log, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, text, mark=0, timeout=5.0):
        """The first log line after mark containing text, or None."""
        def find():
            for line in self.log_since(mark).splitlines():
                if text in line:
                    return line
            return None
        return wait_until(find, timeout)

    def diagnostics(self):
        return (f"--- ejabberd log ({self.log}):\n{tail(self.log, 3000)}\n"
                f"--- ejabberd error log:\n{tail(self.error_log, 1500)}\n"
                f"--- ejabberd stdout:\n{tail(self.dir / 'ejabberd.stdout', 1000)}")


def ejabberd_unavailable():
    """Why a private ejabberd cannot run here, or ''."""
    if not os.access(EJABBERDCTL, os.X_OK):
        return "ejabberd not installed (Debian package ejabberd; tools/deps installs it)"
    try:
        import pwd
        pwd.getpwnam(EJABBERD_USER)
    except KeyError:
        return f"no user {EJABBERD_USER} (the ejabberd package creates it)"
    if os.geteuid() != 0:
        return "a private ejabberd runs as user ejabberd: the tests must run as root"
    return ""


class HAProxy:
    """A private HAProxy in TCP mode on 127.0.0.1: `bind ... accept-proxy`
    (v1 and v2, told apart by HAProxy itself) in front of backend_port,
    logging one line per connection to stdout (a file here) with what it
    read from the PROXY header: the client address (%ci:%cp), the
    destination (%fi:%fp), and the v2 TLVs AUTHORITY and UNIQUE_ID."""

    LOG_FORMAT = ("xi-haproxy ci=%ci cp=%cp fi=%fi fp=%fp authority=%[fc_pp_authority] "
                  "unique_id=%[fc_pp_unique_id] bytes=%B term=%ts")

    def __init__(self, backend_port, name="haproxy", keep=False, send_proxy=None, source=None,
                 backend_tls_port=None, check=False):
        """send_proxy ("send-proxy" or "send-proxy-v2"): the other way round,
        a balancer in front of the proxy: the frontend takes plain clients
        and the server line sends them on with a PROXY header, from source
        (an address of 127/8); backend_tls_port adds a second frontend
        (tls_port) to that port; check adds health checks that send their
        own header (v2: LOCAL)."""
        self.send_proxy = send_proxy
        self.source = source
        self.backend_tls_port = backend_tls_port
        self.check = check
        self.tls_port = free_port() if backend_tls_port else None
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(self.binary, os.X_OK):
            raise ServerUnavailable("haproxy not installed (Debian package haproxy; tools/deps installs it)")
        self.backend_port = backend_port
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix=f"xi-{name}-"))
        self.config = self.dir / "haproxy.cfg"
        self.log = self.dir / "haproxy.log"
        self.port = free_port()
        self.proc = None
        self._out = None

    def _balancer(self):
        """The lines of a balancer in front of the proxy (send_proxy)."""
        opts = f" {self.send_proxy}"
        if self.source:
            opts += f" source {self.source}"
        if self.check:
            opts += " check check-send-proxy inter 300ms"
        out = []
        for name, port, backend in (("plain", self.port, self.backend_port),
                                    ("tls", self.tls_port, self.backend_tls_port)):
            if port is None:
                continue
            out += [f"frontend fe_{name}",
                    f"    bind 127.0.0.1:{port}",
                    '    log-format "xi-haproxy ci=%ci cp=%cp bi=%bi bp=%bp bytes=%B term=%ts"',
                    f"    default_backend be_{name}",
                    f"backend be_{name}",
                    f"    server xi 127.0.0.1:{backend}{opts}"]
        return out

    def start(self, timeout=10.0):
        head = ["# written by tests/integration/harness.py",
                "global",
                "    maxconn 200",
                "defaults",
                "    mode tcp",
                "    log stdout format raw local0 info",
                "    timeout connect 5s",
                "    timeout client 30s",
                "    timeout server 30s"]
        if self.send_proxy:
            body = self._balancer()
        else:
            body = ["frontend fe",
                    f"    bind 127.0.0.1:{self.port} accept-proxy",
                    f'    log-format "{self.LOG_FORMAT}"',
                    "    default_backend be",
                    "backend be",
                    f"    server upstream 127.0.0.1:{self.backend_port}"]
        self.config.write_text("\n".join(head + body + [""]))
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        try:
            wait_listening([p for p in (self.port, self.tls_port) if p], timeout, self.proc,
                           "haproxy")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}\n{tail(self.log)}")
        return self

    def lines(self):
        """The parsed log lines: dicts of the LOG_FORMAT fields."""
        out = []
        for line in tail(self.log, 200000).splitlines():
            if "xi-haproxy " not in line:
                continue
            fields = {}
            for part in line.split("xi-haproxy ", 1)[1].split():
                k, _, v = part.partition("=")
                fields[k] = v
            out.append(fields)
        return out

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=5.0)
            self.proc = None
        if self._out:
            self._out.close()
            self._out = None
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def diagnostics(self):
        return f"--- haproxy log:\n{tail(self.log, 2000)}"
