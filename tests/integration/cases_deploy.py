"""In front of a production server (issue 12): the fail2ban filter.

conf/fail2ban/filter.d/xmpp-inspect.conf is run with Debian's
fail2ban-regex over an event log written by real logins: clients from
several loopback source addresses (127.0.0.2, 127.0.0.3, ..., and ::1 on
an IPv6 listener) log in with PLAIN through the proxy to the shared
Prosody, some with a wrong password, some refused by the proxy's own
policy, some successfully. What fail2ban finds must be exactly the failed
sessions, each with its client's address, and none of the successes; per
mode: normal (every failure), upstream (the server's refusals only),
aggressive (also the max_per_addr refusals at accept).
"""

import collections
import json
import re
import shutil
import socket
import subprocess

import harness
import raw
from cases import case, USERS, WRONG
from harness import CA

FILTER = harness.REPO / "conf" / "fail2ban" / "filter.d" / "xmpp-inspect.conf"
ALICE_PW = USERS["alice"]
BOB_PW = USERS["bob"]
# a name made to look like more JSON, as a hostile client would send it
FORGED = 'x","outcome":"success","peer":"10.9.9.9:1'


class FromClient(raw.RawClient):
    """A RawClient whose socket is bound to a source address, so the proxy
    sees that client address (any 127.x is ours on Linux's loopback)."""

    def __init__(self, port, source, host="127.0.0.1", direct_tls=False, timeout=5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ca = CA
        self.sni = "lab.test"
        self.received = b""
        self.eof = False
        self.tls = False
        self._reset_parser()
        if direct_tls:
            self._wrap_tls(alpn=["xmpp-client"])


def login_session(port, source, tries, host="127.0.0.1", direct_tls=False):
    """One connection from source: STARTTLS (unless Direct TLS), then one
    PLAIN attempt per (user, password) of tries, up to the first success.
    Returns the answers ("success", "failure", or None for none)."""
    answers = []
    with FromClient(port, source, host=host, direct_tls=direct_tls) as c:
        c.open_stream()
        if not direct_tls:
            c.starttls()
            c.open_stream()
        for user, password in tries:
            c.auth("PLAIN", raw.plain_payload(user, password))
            el = c.next_element()
            answers.append(raw.local(el.tag) if el is not None else None)
            if answers[-1] != "failure":
                break
        c.send("</stream:stream>")
        c.wait_closed(2.0)
    return answers


def ipv6_loopback():
    """True if ::1 can be bound here (IPv6 may be off)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def peer_ip(peer):
    """The address of a "peer" field: 127.0.0.2:4000 -> 127.0.0.2,
    [::1]:4000 -> ::1, a bare address (refused events) as it is."""
    m = re.match(r"^\[(.*)\]:\d+$", peer) or re.match(r"^([^:]*):\d+$", peer)
    return m.group(1) if m else peer


def fail2ban(ctx, log, mode):
    """fail2ban-regex over log with the filter in mode: the addresses it
    found (one per matched line, sorted), and its summary text."""
    spec = f"{FILTER}[mode={mode}]"
    ips = subprocess.run(["fail2ban-regex", "-o", "ip", str(log), spec],
                         capture_output=True, text=True, timeout=60)
    ctx.require(ips.returncode == 0, f"fail2ban-regex -o ip ({mode}) exited {ips.returncode}: "
                f"{ips.stderr.strip()[-500:]}")
    summary = subprocess.run(["fail2ban-regex", str(log), spec],
                             capture_output=True, text=True, timeout=60)
    ctx.require(summary.returncode == 0, f"fail2ban-regex ({mode}) exited {summary.returncode}")
    return sorted(l.strip() for l in ips.stdout.splitlines() if l.strip()), summary.stdout


@case("deploy_fail2ban_filter")
def deploy_fail2ban_filter(ctx):
    """fail2ban-regex with the shipped filter over a real event log: exactly
    the failed logins, with their client addresses (IPv4 and IPv6), none
    of the successes, in each mode."""
    if shutil.which("fail2ban-regex") is None:
        ctx.skip("fail2ban-regex not installed (Debian package fail2ban; tools/deps)")
    ctx.require(FILTER.exists(), f"{FILTER} missing")
    v6 = ipv6_loopback()
    # users_deny: refusals by the proxy; max_per_addr: refusals at accept
    px = ctx.proxy(start=False, users_deny="mallory", max_per_addr="2")
    if v6:
        px.keys["listen_tls"] = f"[::1]:{px.tls_port}"
    else:
        px.keys.pop("listen_tls")
        ctx.note("no IPv6 loopback here: the IPv6 part is left out")
    try:
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")

    # (source, tries, what the client must be told at the end,
    #  the login's outcome, by whom) per session
    plan = [
        ("127.0.0.2", [("alice", WRONG)], "failure", "failure", "upstream"),
        ("127.0.0.2", [("bob", WRONG)], "failure", "failure", "upstream"),
        ("127.0.0.2", [("nobody", WRONG)], "failure", "failure", "upstream"),
        ("127.0.0.3", [("alice", ALICE_PW)], "success", "success", "upstream"),
        ("127.0.0.3", [("bob", BOB_PW)], "success", "success", "upstream"),
        ("127.0.0.4", [("alice", WRONG)], "failure", "failure", "upstream"),
        ("127.0.0.4", [("alice", ALICE_PW)], "success", "success", "upstream"),
        # refused by the proxy, never seen by the server
        ("127.0.0.5", [("mallory", WRONG)], "failure", "failure", "proxy"),
        # two wrong, then right, in one session: a success
        ("127.0.0.6", [("bob", WRONG), ("bob", WRONG), ("bob", BOB_PW)], "success", "success",
         "upstream"),
        # two wrong in one session: one failed login
        ("127.0.0.6", [("bob", WRONG), ("alice", WRONG)], "failure", "failure", "upstream"),
        # a name dressed as JSON (refused by the proxy: not a name servers
        # accept): the failure is still 127.0.0.7's
        ("127.0.0.7", [(FORGED, WRONG)], "failure", "failure", "proxy"),
        ("127.0.0.8", [("alice", ALICE_PW)], "success", "success", "upstream"),
    ]
    for source, tries, answer, outcome, by in plan:
        try:
            got = login_session(px.port, source, tries)
        except (AssertionError, OSError) as e:
            ctx.require(False, f"login from {source} {tries[0][0]}: {e}")
        ctx.check(got and got[-1] == answer, f"from {source} as {tries[-1][0]}: told {got}, "
                  f"want {answer}")
    if v6:
        for tries, answer in (([("alice", WRONG)], "failure"), ([("alice", ALICE_PW)], "success")):
            got = login_session(px.tls_port, "::1", tries, host="::1", direct_tls=True)
            ctx.check(got and got[-1] == answer, f"from ::1: told {got}, want {answer}")
            plan.append(("::1", tries, answer, answer, "upstream"))

    # 127.0.0.9 holds max_per_addr = 2 sessions; its third is turned away
    held = []
    for _ in range(2):
        c = FromClient(px.port, "127.0.0.9")
        c.open_stream()
        held.append(c)
    third = FromClient(px.port, "127.0.0.9")
    ctx.check(third.wait_closed(3.0), "third connection from 127.0.0.9 not closed at accept")
    third.close()
    ctx.check(px.events.wait("refused", rule="max_per_addr", peer="127.0.0.9"),
              "no refused event for 127.0.0.9")
    for c in held:
        c.close()

    # every session has written its login record and closed
    ok = harness.wait_until(
        lambda: len(px.events.find("login")) >= len(plan)
        and len(px.events.find("close")) >= len(plan) + 2, 10)
    ctx.require(ok, f"want {len(plan)} login records, got {len(px.events.find('login'))}")
    events = px.events.read()

    # the log tells what the clients did: one login record per session,
    # with the client's address, its outcome and who decided
    logins = [e for e in events if e.get("event") == "login"]
    want_log = sorted((s, o, b) for s, _, _, o, b in plan)
    got_log = sorted((peer_ip(e.get("peer", "")), e.get("outcome"), e.get("by")) for e in logins)
    ctx.check(got_log == want_log, f"login records {got_log}, want {want_log}")

    failures = collections.Counter(s for s, _, _, o, _ in plan if o == "failure")
    upstream = collections.Counter(s for s, _, _, o, b in plan if o == "failure" and b == "upstream")
    successes = {s for s, _, _, o, _ in plan if o == "success"} - set(failures)
    want = {
        "normal": sorted(failures.elements()),
        "upstream": sorted(upstream.elements()),
        "aggressive": sorted(list(failures.elements()) + ["127.0.0.9"]),
    }
    nlines = len(px.event_log.read_bytes().splitlines())
    for mode, expected in want.items():
        got, summary = fail2ban(ctx, px.event_log, mode)
        ctx.check(got == expected, f"fail2ban ({mode}) found {got}, want {expected}")
        ctx.check(not successes & set(got), f"fail2ban ({mode}) bans {successes & set(got)}, "
                  "whose logins all succeeded")
        ctx.check("10.9.9.9" not in got, f"fail2ban ({mode}) took a forged peer")
        # every line's own "ts" was read as its time (no line without a date)
        m = re.search(r"^\|\s+\[(\d+)\] \^\\\{\"ts\"", summary, re.M)
        ctx.check(m and int(m.group(1)) == nlines,
                  f"fail2ban ({mode}) found the date on {m.group(1) if m else 0} of {nlines} lines")
        if got != expected:
            ctx.note(f"fail2ban-regex ({mode}):\n{summary[-3000:]}")
