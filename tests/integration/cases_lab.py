"""Transparent interception on a lab router (issue 11): network namespaces
this module makes and removes itself, iptables REDIRECT and TPROXY, two
real Prosody servers for two domains, real clients (slixmpp, go-sendxmpp)
that are told nothing about the proxy.

  xit-c-PID  the client       10.211.1.2     fd11:1::2
     | veth
  xit-r-PID  the router       10.211.1.1     fd11:1::1   (xmpp-inspect and
     | veth                   10.211.2.1     fd11:2::1    the rules)
  xit-s-PID  the servers      10.211.2.2     fd11:2::2   Prosody a.lab.test
                              10.211.2.3     fd11:2::3   Prosody b.lab.test

The servers listen on their own addresses, ports 5222 (STARTTLS) and 5223
(Direct TLS); the router forwards between the two sides and, with the
rules, hands every connection to those ports to xmpp-inspect (upstream =
original-dst). The clients connect to the servers' own addresses (slixmpp
is given the address; go-sendxmpp resolves the name through the client
namespace's /etc/netns/NAME/hosts) and trust only the forge CA
(certs/lab/forge-ca.pem): the proxy has no certificate of its own, it
forges one per domain a client asks for (forge_ca); the servers present
the lab CA's *.lab.test certificate, which the proxy verifies. Every
session's transcript (transcript_dir) has the whole login and no secret.

  lab_redirect  iptables/ip6tables -t nat REDIRECT, upstream from the proxy:
                STARTTLS and Direct TLS logins to both servers over IPv4
                and IPv6, Direct TLS redirected from 5223 (upstream_tls
                auto: Direct TLS to the server's 5223), go-sendxmpp; each upstream event and
                login record names the real server address:port; the
                server logs the router's address; without the rules (the
                control) the same clients reach the servers directly and
                the proxy sees nothing.
  lab_tproxy    -t mangle TPROXY with the socket match and a policy route,
                tproxy = yes, upstream_source = client: the servers' own
                logs show the client namespace's address, IPv4 and IPv6.

Needs root, ip(8), iptables/ip6tables and the kernel's REDIRECT, TPROXY
and socket targets: each is tried, and the case is skipped with the reason
if one is missing. Every namespace, rule (they live in the namespaces) and
process is removed in a finally; namespaces left by a killed run (their PID
gone) are removed at the start.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import harness
from cases import case, USERS, ALL_PASSWORDS
from cases_transcript import check_transcript

FORGE_CA = harness.CERTS / "forge-ca.pem"
FORGE_KEY = harness.CERTS / "forge-ca.key"
THIRD = "c.lab.test"  # a domain no client or key was made for: a.lab.test's server hosts it

PREFIX = "xit-"
V4 = {"cli": "10.211.1.2", "rt_c": "10.211.1.1", "rt_s": "10.211.2.1",
      "a": "10.211.2.2", "b": "10.211.2.3"}
V6 = {"cli": "fd11:1::2", "rt_c": "fd11:1::1", "rt_s": "fd11:2::1",
      "a": "fd11:2::2", "b": "fd11:2::3"}
DOMAINS = {"a": "a.lab.test", "b": "b.lab.test"}
PROXY_PORT, PROXY_TLS_PORT = 15222, 15223


def sh(*argv, ns=None, check=True, timeout=60, **kw):
    """Runs argv (in namespace ns); returns the CompletedProcess."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise harness.HarnessError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


def netns_list():
    r = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def netns_remove(name):
    """Removes a namespace (its processes are stopped first). ip netns del
    waits for the kernel's rtnl lock, which the cleanup of namespaces
    (other tests' too) may hold for seconds on a loaded machine."""
    for _ in range(3):
        try:
            sh("ip", "netns", "del", name, check=False, timeout=60)
            break
        except subprocess.TimeoutExpired:
            continue
    shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def remove_stale():
    """Namespaces of this module whose run is gone (killed before its
    finally): their PID suffix names no live process."""
    for name in netns_list():
        m = re.match(rf"^{PREFIX}[crs]-(\d+)$", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            netns_remove(name)


def ns_listening(pid, ports):
    """Whether every port is listened on in the network namespace of pid."""
    seen = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        seen.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            return False
    return set(ports) <= seen


def wait_ns_listening(proc, ports, what, timeout=20.0):
    for _ in harness.deadline_loop(timeout):
        if proc.poll() is not None:
            raise harness.HarnessError(f"{what} exited with status {proc.returncode}")
        if ns_listening(proc.pid, ports):
            return
    raise harness.HarnessError(f"{what} not listening on {ports} after {timeout}s")


class LabProsody(harness.Prosody):
    """A Prosody for one domain on one pair of addresses of the server
    namespace, ports 5222 and 5223, logging at debug level (its "New
    connection FD n (ADDR, PORT, ...)" lines are the witness of who
    connected)."""

    def __init__(self, ns, domain, addrs, extra_hosts=()):
        super().__init__(USERS, debug=True, name=f"lab-{domain}")
        self.ns, self.domain, self.addrs = ns, domain, addrs
        self.extra_hosts = tuple(extra_hosts)
        self.port, self.tls_port = 5222, 5223

    def write_config(self, plugins=None):
        super().write_config(plugins)
        text = self.config.read_text()
        ifaces = "{ " + "; ".join(harness.lua_str(a) for a in self.addrs) + " }"
        text = text.replace('{ "127.0.0.1" }', ifaces)
        text = text.replace(f'VirtualHost "{harness.DOMAIN}"', f"VirtualHost {harness.lua_str(self.domain)}")
        text = text.replace(f'VirtualHost "{harness.ANON_DOMAIN}"', f'VirtualHost "anon.{self.domain}"')
        for host in self.extra_hosts:
            text += f'\nVirtualHost {harness.lua_str(host)}\n  authentication = "internal_hashed"\n'
        self.config.write_text(text)

    def register(self):
        for user, password in self.users.items():
            r = subprocess.run(["prosodyctl", "--config", str(self.config), "register", user,
                                self.domain, password], capture_output=True, text=True,
                               timeout=60, env=self.env)
            if r.returncode != 0:
                raise harness.HarnessError(f"prosodyctl register {user}: {r.stdout}{r.stderr}")

    def start(self, timeout=20.0):
        (self.dir / "certs").mkdir(exist_ok=True)
        self.write_config()
        self.register()
        self._stderr = open(self.dir / "prosody.stderr", "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "prosody", "--config", str(self.config), "-F"],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True)
        try:
            wait_ns_listening(self.proc, [5222, 5223], f"prosody {self.domain}", timeout)
        except harness.HarnessError as e:
            self.stop()
            raise harness.HarnessError(f"{e}\n{harness.tail(self.dir / 'prosody.stderr')}")
        return self

    def peers(self):
        """(address, port) of every connection Prosody accepted so far."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"New connection FD \d+ \(([0-9a-fA-F.:]+), (\d+),", text)


class LabProxy(harness.Proxy):
    """xmpp-inspect in the router namespace, in transparent mode, with no
    certificate of its own: every one a client sees is forged for the
    domain it asked for, by the forge CA (the clients trust only that).
    Each session's transcript goes to transcripts/."""

    def __init__(self, binary, ns, extra):
        keys = {"listen": f"0.0.0.0:{PROXY_PORT}", "listen_tls": f"0.0.0.0:{PROXY_TLS_PORT}",
                "upstream": "original-dst", "upstream_tls": None, "cert": None, "key": None,
                "forge_ca": str(FORGE_CA), "forge_ca_key": str(FORGE_KEY)}
        keys.update(extra)
        super().__init__(binary, 0, extra=keys, name="lab")
        self.ns = ns
        self.transcripts = self.dir / "transcripts"
        self.transcripts.mkdir(mode=0o700)
        self.keys["transcript_dir"] = str(self.transcripts)
        if "user" in keys:
            # it writes each transcript after dropping root
            import pwd
            pw = pwd.getpwnam(keys["user"])
            os.chmod(self.dir, 0o711)
            os.chown(self.transcripts, pw.pw_uid, pw.pw_gid)
        # a second listener of each kind for IPv6 (the file's lines repeat)
        self.v6 = [("listen", f"[::]:{PROXY_PORT}"), ("listen_tls", f"[::]:{PROXY_TLS_PORT}")]

    def write_config(self):
        super().write_config()
        with open(self.config, "a") as f:
            for k, v in self.v6:
                f.write(f"{k} = {v}\n")

    def start(self, timeout=10.0):
        self.write_config()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, self.binary, "-c",
                                      str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, env=env,
                                     start_new_session=True)
        try:
            wait_ns_listening(self.proc, [PROXY_PORT, PROXY_TLS_PORT], "xmpp-inspect", timeout)
        except harness.HarnessError as e:
            self.stop()
            raise harness.HarnessError(f"{e}\n--- proxy stderr:\n{harness.tail(self.stderr_path)}")
        return self


class Lab:
    """The three namespaces, their links and routes, the two servers."""

    def __init__(self, ctx):
        self.ctx = ctx
        pid = os.getpid()
        self.cli, self.rt, self.srv = (f"{PREFIX}{k}-{pid}" for k in "crs")
        self.servers = {}
        self.dir = Path(tempfile.mkdtemp(prefix="xi-lab-"))

    def up(self):
        remove_stale()
        for ns in (self.cli, self.rt, self.srv):
            netns_remove(ns)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        # the veth ends are made inside the namespaces: no name in the host's
        sh("ip", "link", "add", "xitc0", "netns", self.cli, "type", "veth",
           "peer", "name", "xitc1", "netns", self.rt)
        sh("ip", "link", "add", "xits0", "netns", self.srv, "type", "veth",
           "peer", "name", "xits1", "netns", self.rt)
        plan = [(self.cli, "xitc0", [V4["cli"] + "/24"], [V6["cli"] + "/64"]),
                (self.rt, "xitc1", [V4["rt_c"] + "/24"], [V6["rt_c"] + "/64"]),
                (self.rt, "xits1", [V4["rt_s"] + "/24"], [V6["rt_s"] + "/64"]),
                (self.srv, "xits0", [V4["a"] + "/24", V4["b"] + "/24"],
                 [V6["a"] + "/64", V6["b"] + "/64"])]
        for ns, dev, v4, v6 in plan:
            for a in v4:
                sh("ip", "addr", "add", a, "dev", dev, ns=ns)
            for a in v6:
                sh("ip", "-6", "addr", "add", a, "dev", dev, "nodad", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "route", "add", "default", "via", V4["rt_c"], ns=self.cli)
        sh("ip", "-6", "route", "add", "default", "via", V6["rt_c"], ns=self.cli)
        sh("ip", "route", "add", "default", "via", V4["rt_s"], ns=self.srv)
        sh("ip", "-6", "route", "add", "default", "via", V6["rt_s"], ns=self.srv)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
            sh("sysctl", "-qw", key, ns=self.rt)
        # the names, for go-sendxmpp (ip netns exec bind-mounts this file)
        hosts = Path(f"/etc/netns/{self.cli}")
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(
            f"127.0.0.1 localhost\n{V4['a']} {DOMAINS['a']}\n{V4['b']} {DOMAINS['b']}\n")
        for k in ("a", "b"):
            p = LabProsody(self.srv, DOMAINS[k], [V4[k], V6[k]], (THIRD,) if k == "a" else ())
            self.servers[k] = p
            p.start()

    def down(self):
        for p in self.servers.values():
            p.stop()
        for ns in (self.cli, self.rt, self.srv):
            netns_remove(ns)
        shutil.rmtree(self.dir, ignore_errors=True)

    def rules(self, cmds):
        """Applies (tool, args...) rules in the router; the first failure
        of a target says the kernel or iptables lacks it."""
        for tool, *args in cmds:
            r = sh(tool, *args, ns=self.rt, check=False)
            if r.returncode != 0:
                return f"{tool} {' '.join(args)}: {r.stderr.strip()}"
        return None

    def flush(self):
        for tool in ("iptables", "ip6tables"):
            for table in ("nat", "mangle"):
                sh(tool, "-t", table, "-F", ns=self.rt, check=False)
                sh(tool, "-t", table, "-X", ns=self.rt, check=False)

    def slixmpp(self, server, v6=False, direct_tls=False, user="alice", ca=FORGE_CA):
        """A slixmpp login (client.py) from the client namespace to a
        server's own address; its JSON outcome."""
        addr = (V6 if v6 else V4)[server]
        jid = f"{user}@{DOMAINS[server]}"
        cmd = [harness.PYTHON, str(harness.HERE / "client.py"), "--jid", jid,
               "--password", USERS[user], "--host", addr,
               "--port", "5223" if direct_tls else "5222", "--ca", str(ca),
               "--sni", DOMAINS[server], "--timeout", "10", "--mech", "SCRAM-SHA-1"]
        if direct_tls:
            cmd.append("--direct-tls")
        r = sh(*cmd, ns=self.cli, check=False, timeout=30)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        try:
            import json
            out = json.loads(lines[-1])
        except (IndexError, ValueError):
            out = {"ok": False, "error": f"no JSON from client.py ({r.returncode})"}
        if not out.get("ok"):
            self.ctx.note(f"slixmpp {jid} at {addr} direct_tls={direct_tls}: {out}\n{r.stderr[-2000:]}")
        return out

    def sendxmpp(self, server, direct_tls=False, ca=FORGE_CA):
        """go-sendxmpp from the client namespace: it resolves the domain
        through the namespace's hosts file, trusts only the forge CA
        (SSL_CERT_FILE), logs in and sends a message to the user itself.
        Returns (ok, output)."""
        jid = f"alice@{DOMAINS[server]}"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), SSL_CERT_FILE=str(ca),
                   SSL_CERT_DIR=str(self.dir / "no-certs"))
        cmd = ["go-sendxmpp", "-u", jid, "-p", USERS["alice"], "-j",
               f"{DOMAINS[server]}:{5223 if direct_tls else 5222}", "--timeout", "10"]
        if direct_tls:
            cmd.append("-t")
        cmd.append(jid)
        r = sh(*cmd, ns=self.cli, check=False, timeout=30, input="through the lab router\n",
               env=env)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            self.ctx.note(f"go-sendxmpp {jid} direct_tls={direct_tls}: status {r.returncode}: {out}")
        return r.returncode == 0, out


def lab_prerequisites(ctx):
    if os.geteuid() != 0:
        ctx.skip("needs root (network namespaces, iptables)")
    for tool in ("ip", "iptables", "ip6tables", "prosody", "go-sendxmpp"):
        if shutil.which(tool) is None:
            ctx.skip(f"{tool} not installed")


def upstream_events(px):
    return [e for e in px.events.read() if e.get("event") == "upstream"]


def check_sessions(ctx, px, want):
    """Every wanted (address:port, port_kind) has a session whose upstream
    event and login record name that address and whose login succeeded."""
    events = px.events.read()
    by_sid = {}
    for e in events:
        by_sid.setdefault(e.get("sid"), []).append(e)
    found = []
    for sid, evs in by_sid.items():
        conn = next((e for e in evs if e["event"] == "connect"), None)
        up = next((e for e in evs if e["event"] == "upstream"), None)
        login = next((e for e in evs if e["event"] == "login"), None)
        if conn and up:
            found.append((up.get("addr"), conn.get("port_kind"), up.get("ok"),
                          login.get("outcome") if login else None,
                          login.get("upstream") if login else None))
    for addr, kind in want:
        ctx.check(any(f[0] == addr and f[1] == kind and f[2] and f[3] == "success" and f[4] == addr
                      for f in found),
                  f"no successful {kind} session to {addr} with it in upstream.addr and "
                  f"login.upstream (sessions: {found})")


def check_forged(ctx, px):
    """Every client leg's certificate was forged for the domain its
    session asked for."""
    events = px.events.read()
    domains = {e["sid"]: e.get("domain") for e in events if e.get("event") == "login"}
    tls = [e for e in events if e.get("event") == "tls" and e.get("leg") == "client" and e.get("ok")]
    ctx.check(tls, "no client-leg tls event")
    for e in tls:
        want = domains.get(e["sid"])
        ctx.check(e.get("forged") is True and want in (e.get("names") or []),
                  f"session {e['sid']}: client certificate not forged for {want}: {e}")


def check_transcripts(ctx, px):
    """Each login's transcript: the whole login (slixmpp's, with its probe
    message, in check_transcript's detail), no password in any."""
    logins = [e for e in px.events.read() if e.get("event") == "login"]
    for lg in logins:
        name = lg.get("transcript")
        if not ctx.check(name, f"session {lg['sid']}: login without transcript"):
            continue
        path = px.transcripts / name
        if not ctx.check(path.exists(), f"{path} missing"):
            continue
        text = path.read_text(errors="replace")
        ctx.check(f" note - - upstream {lg.get('upstream')}\n" in text,
                  f"session {lg['sid']}: the transcript does not name the upstream "
                  f"{lg.get('upstream')}: {text[:300]!r}")
        if lg.get("mechanism") == "SCRAM-SHA-1":  # slixmpp's
            check_transcript(ctx, f"session {lg['sid']}", path, text.splitlines(), "SCRAM-SHA-1")
        for pw in ALL_PASSWORDS:
            bad = harness.find_secrets([path], pw, list(USERS))
            ctx.check(not bad, f"session {lg['sid']}: a secret in the transcript: {bad}")


def slixmpp_logins(ctx, lab, logins):
    """One slixmpp login from the client namespace per (server, IPv6?,
    Direct TLS?), each checked."""
    for server, v6, direct in logins:
        r = lab.slixmpp(server, v6=v6, direct_tls=direct)
        ctx.check(r.get("ok"), f"slixmpp {'Direct TLS' if direct else 'STARTTLS'} to "
                  f"{server}.lab.test over {'IPv6' if v6 else 'IPv4'}: {r.get('error')}")


@case("lab_redirect", prosody=None)
def lab_redirect(ctx):
    """iptables REDIRECT on a lab router: two servers, IPv4 and IPv6,
    STARTTLS and Direct TLS, slixmpp and go-sendxmpp."""
    lab_prerequisites(ctx)
    lab = Lab(ctx)
    try:
        lab.up()
        rules = []
        for tool in ("iptables", "ip6tables"):
            for port, to in ((5222, PROXY_PORT), (5223, PROXY_TLS_PORT)):
                rules.append((tool, "-t", "nat", "-A", "PREROUTING", "-i", "xitc1", "-p", "tcp",
                              "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(to)))
        missing = lab.rules(rules)
        if missing:
            ctx.skip(f"no REDIRECT here: {missing}")
        px = LabProxy(ctx.runner.binary, lab.rt, {})
        ctx.proxies.append(px)
        px.start()

        a, b = lab.servers["a"], lab.servers["b"]
        slixmpp_logins(ctx, lab, [("a", False, False), ("b", True, False), ("b", False, True),
                                  ("a", True, True)])
        ok, out = lab.sendxmpp("a")
        ctx.check(ok, f"go-sendxmpp to a.lab.test: {out[-300:]}")
        ok, out = lab.sendxmpp("b", direct_tls=True)
        ctx.check(ok, f"go-sendxmpp Direct TLS to b.lab.test: {out[-300:]}")
        harness.wait_until(lambda: len([e for e in px.events.read() if e["event"] == "close"]) >= 6, 5)
        check_sessions(ctx, px, [(f"{V4['a']}:5222", "starttls"),
                                 (f"[{V6['b']}]:5222", "starttls"),
                                 (f"{V4['b']}:5223", "direct_tls"),
                                 (f"[{V6['a']}]:5223", "direct_tls")])
        ctx.check(not any(e.get("addr") == "original-dst" for e in upstream_events(px)),
                  "an upstream event says original-dst instead of the address")
        check_forged(ctx, px)
        check_transcripts(ctx, px)
        # a third domain, one no certificate was made for: a certificate
        # for that name, verified by openssl against the forge CA alone
        r = sh("openssl", "s_client", "-connect", f"{V4['a']}:5222", "-starttls", "xmpp",
               "-xmpphost", THIRD, "-CAfile", FORGE_CA, "-verify_return_error",
               "-verify_hostname", THIRD, ns=lab.cli, check=False, input="")
        ctx.check(r.returncode == 0 and "Verify return code: 0 (ok)" in r.stdout,
                  f"{THIRD}: no verified forged certificate: {(r.stdout + r.stderr)[-400:]}")
        # the servers saw the router, not the client
        peers = [p[0] for p in a.peers() + b.peers()]
        ctx.check(V4["rt_s"] in peers and V6["rt_s"] in peers,
                  f"the servers did not see the router's addresses: {peers}")
        ctx.check(V4["cli"] not in peers and V6["cli"] not in peers,
                  f"a server saw the client itself through the proxy: {peers}")

        # the control: without the rules the clients reach the servers
        # directly (the real certificates: a client trusting only the
        # forge CA refuses them, one trusting the lab CA logs in), and the
        # proxy sees no new session
        lab.flush()
        before = len(px.events.read())
        r = lab.slixmpp("a")
        ctx.check(not r.get("ok") and r.get("stage") == "tls",
                  f"control: a forge-CA client accepted a.lab.test's real certificate: {r}")
        r = lab.slixmpp("a", ca=harness.CA)
        ctx.check(r.get("ok"), f"control: slixmpp straight to a.lab.test: {r.get('error')}")
        ok, out = lab.sendxmpp("b", ca=harness.CA)
        ctx.check(ok, f"control: go-sendxmpp straight to b.lab.test: {out[-300:]}")
        ctx.check(len(px.events.read()) == before, "control: the proxy saw sessions without the rules")
        peers = [p[0] for p in a.peers() + b.peers()]
        ctx.check(V4["cli"] in peers, f"control: the servers never saw the client: {peers}")
    finally:
        for px in ctx.proxies:
            px.stop()
        lab.down()


@case("lab_tproxy", prosody=None)
def lab_tproxy(ctx):
    """TPROXY on a lab router with upstream_source = client, the proxy
    running as nobody: the servers see the client's own address, IPv4 and
    IPv6."""
    lab_prerequisites(ctx)
    lab = Lab(ctx)
    try:
        lab.up()
        rules = []
        for tool, ip in (("iptables", "ip"), ("ip6tables", "ip")):
            rules += [
                (tool, "-t", "mangle", "-N", "XIT_DIVERT"),
                (tool, "-t", "mangle", "-A", "XIT_DIVERT", "-j", "MARK", "--set-mark", "1"),
                (tool, "-t", "mangle", "-A", "XIT_DIVERT", "-j", "ACCEPT"),
                (tool, "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-m", "socket",
                 "--transparent", "-j", "XIT_DIVERT"),
            ]
            for port, to in ((5222, PROXY_PORT), (5223, PROXY_TLS_PORT)):
                rules.append((tool, "-t", "mangle", "-A", "PREROUTING", "-i", "xitc1", "-p", "tcp",
                              "--dport", str(port), "-j", "TPROXY", "--tproxy-mark", "0x1/0x1",
                              "--on-port", str(to)))
        rules += [("ip", "rule", "add", "fwmark", "1", "lookup", "100"),
                  ("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"),
                  ("ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100"),
                  ("ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")]
        missing = lab.rules(rules)
        if missing:
            ctx.skip(f"no TPROXY here: {missing}")
        # as nobody: only the CAP_NET_ADMIN it keeps lets it bind to the
        # client's address
        px = LabProxy(ctx.runner.binary, lab.rt, {"tproxy": "yes", "upstream_source": "client",
                                                  "user": "nobody"})
        ctx.proxies.append(px)
        px.start()

        a, b = lab.servers["a"], lab.servers["b"]
        slixmpp_logins(ctx, lab, [("a", False, False), ("b", True, False), ("a", False, True),
                                  ("b", True, True)])
        ok, out = lab.sendxmpp("b")
        ctx.check(ok, f"go-sendxmpp to b.lab.test: {out[-300:]}")
        harness.wait_until(lambda: len([e for e in px.events.read() if e["event"] == "close"]) >= 5, 5)
        check_sessions(ctx, px, [(f"{V4['a']}:5222", "starttls"),
                                 (f"[{V6['b']}]:5222", "starttls"),
                                 (f"{V4['a']}:5223", "direct_tls"),
                                 (f"[{V6['b']}]:5223", "direct_tls"),
                                 (f"{V4['b']}:5222", "starttls")])
        peers = [p[0] for p in a.peers() + b.peers()]
        ctx.check(V4["cli"] in [p[0] for p in a.peers()],
                  f"a.lab.test did not see the client's IPv4 address: {a.peers()}")
        ctx.check(V6["cli"] in [p[0] for p in b.peers()],
                  f"b.lab.test did not see the client's IPv6 address: {b.peers()}")
        ctx.check(V4["rt_s"] not in peers and V6["rt_s"] not in peers,
                  f"a server saw the router's address: {peers}")
        ctx.check("running as nobody" in px.stderr(), "the proxy did not drop to nobody")
        check_forged(ctx, px)
        check_transcripts(ctx, px)
    finally:
        for px in ctx.proxies:
            px.stop()
        lab.down()


# ---------------------------------------------------------------- without the lab
#
# What needs no namespaces: a connection that was not redirected, and
# IP_TRANSPARENT refused for want of CAP_NET_ADMIN (the proxy started
# through setpriv with both out of its bounding set: either lets a socket set IP_TRANSPARENT).


def no_net_admin(ctx, binary):
    """A wrapper that starts binary without CAP_NET_ADMIN."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        ctx.skip("needs root and setpriv (util-linux) to drop CAP_NET_ADMIN")
    d = Path(tempfile.mkdtemp(prefix="xi-nocap-"))
    w = d / "xmpp-inspect"
    w.write_text("#!/bin/sh\nexec setpriv --bounding-set -net_admin,-net_raw --inh-caps -net_admin,-net_raw "
                 f"{binary} \"$@\"\n")
    w.chmod(0o755)
    return w


@case("transparent_not_redirected")
def transparent_not_redirected(ctx):
    """upstream = original-dst, a client connecting to the proxy's own port
    (no REDIRECT, no TPROXY): remote-connection-failed, never a connection
    to itself; the same with tproxy = yes."""
    import raw
    for extra in ({}, {"tproxy": "yes"}):
        px = ctx.proxy(upstream_port=1, **{"upstream": "original-dst", **extra})
        c = ctx.raw(px.port)
        c.send(raw.header())
        cond = c.stream_error(timeout=10)
        ctx.check(cond == "remote-connection-failed", f"{extra}: client got {cond!r}")
        s = ctx.session(px)
        up = s.expect(ctx, "upstream", ok=False)
        if up:
            ctx.check("proxy itself" in str(up.get("error")) or "original destination" in
                      str(up.get("error")), f"{extra}: upstream error {up.get('error')!r}")
        ctx.check(len([e for e in px.events.read() if e.get("event") == "connect"]) == 1,
                  f"{extra}: the proxy connected to itself")


@case("transparent_no_net_admin")
def transparent_no_net_admin(ctx):
    """Without CAP_NET_ADMIN: tproxy = yes stops at start-up naming the
    capability; upstream_source = client fails each session with an
    upstream error and a stderr line naming it, the client is told
    remote-connection-failed."""
    import raw
    w = no_net_admin(ctx, ctx.runner.binary)
    try:
        px = harness.Proxy(w, ctx.prosody().port, extra={"tproxy": "yes"}, name="nocap")
        ctx.proxies.append(px)
        try:
            px.start()
            ctx.check(False, "tproxy = yes started without CAP_NET_ADMIN")
        except harness.HarnessError:
            pass
        px.stop()
        ctx.check(px.exit_status == 1, f"exit status {px.exit_status}, want 1")
        err = px.stderr()
        ctx.check("IP_TRANSPARENT" in err and "CAP_NET_ADMIN" in err,
                  f"start-up error does not name IP_TRANSPARENT and CAP_NET_ADMIN: {err[-300:]!r}")
        px.expect_status = 1

        px = harness.Proxy(w, ctx.prosody().port, extra={"upstream_source": "client"},
                           name="nocap2")
        ctx.proxies.append(px)
        px.start()
        c = ctx.raw(px.port)
        c.send(raw.header())
        cond = c.stream_error(timeout=10)
        ctx.check(cond == "remote-connection-failed", f"client got {cond!r}")
        s = ctx.session(px)
        up = s.expect(ctx, "upstream", ok=False)
        if up:
            ctx.check("CAP_NET_ADMIN" in str(up.get("error")), f"upstream error {up.get('error')!r}")
        ctx.check(harness.wait_until(lambda: "CAP_NET_ADMIN" in px.stderr(), 3),
                  f"no stderr line naming CAP_NET_ADMIN: {px.stderr()[-300:]!r}")
    finally:
        shutil.rmtree(w.parent, ignore_errors=True)
