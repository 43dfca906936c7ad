#!/usr/bin/env python3
"""Integration test of tools/report, the audit report.

usage: tests/integration/test_report.py [LOG...]

Writes synthetic event logs (several processes, sessions interleaved, users,
mechanisms, failures, policy events, SASL2 user agents, downgrades and bad
lines), runs tools/report over them with /usr/bin/python3 in table and --json
mode, and checks its figures against the ones the generator knows.  Each LOG
given (real logs of the suite) is then run through the report too: exit 0,
and as many sessions as the log has connect events.

Prints one line per check, "PASS: report ..." or "FAIL: report ... (why)";
exits 1 if any check failed.
"""

import collections
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "tools", "report")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

failed = 0


def check(ok, name, why=""):
    global failed
    if ok:
        print("PASS: report %s" % name)
    else:
        failed += 1
        print("FAIL: report %s (%s)" % (name, why))
    sys.stdout.flush()
    return ok


def check_eq(got, want, name):
    return check(got == want, name, "got %r, want %r" % (got, want))


def run(args, stdin=None):
    p = subprocess.run([PYTHON, REPORT] + list(args), input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# -- the synthetic sessions ---------------------------------------------------
#
# One dict per session.  "proc" separates the processes inside one file; a
# session of a new process may reuse the sids of the old one.  "attempts" is
# a list of (mechanism, outcome or None, by, condition).

SERVER = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "DIGEST-MD5"]


def S(**kw):
    d = dict(file="a", proc=0, sid=None, peer=None, user=None, user_field="authcid",
             login=True, login_user=True, attempts=[], tls="TLSv1.3",
             offered=["PLAIN", "SCRAM-SHA-1"], server=SERVER, ua=None,
             policies=[], downgrade=None, close=True)
    d.update(kw)
    return d


SESSIONS = [
    # file a, process 0: sessions interleaved with each other
    S(sid=1, peer="127.0.0.1:40001", user="alice", attempts=[("PLAIN", "success", "upstream", None)]),
    S(sid=2, peer="127.0.0.1:40002", user="alice",
      attempts=[("SCRAM-SHA-1", "failure", "upstream", "not-authorized")]),
    S(sid=3, peer="10.0.0.2:5000", user="bob", tls="TLSv1.2",
      attempts=[("SCRAM-SHA-1", "success", "upstream", None)],
      ua=("Conversations", "Pixel 7", "d2f1")),
    S(sid=4, peer="10.0.0.2:5001", user="mallory", tls=None, offered=["SCRAM-SHA-1"],
      attempts=[("PLAIN", "failure", "proxy", "encryption-required")],
      policies=[("plain_without_tls", "reject")]),
    S(sid=5, peer="[::1]:40005", user="carol", user_field="username", login_user=False,
      offered=["SCRAM-SHA-1"],
      attempts=[("DIGEST-MD5", "failure", "proxy", "invalid-mechanism"),
                ("SCRAM-SHA-1", "success", "upstream", None)],
      policies=[("mechanisms_deny", "strip"), ("mechanisms_deny", "reject")],
      downgrade="tls"),
    S(sid=6, peer="127.0.0.1:40006", login=False),                 # connects, leaves
    S(sid=7, peer="127.0.0.1:40007", user="alice", close=False,    # cut by the restart
      attempts=[("PLAIN", "success", "upstream", None)],
      policies=[("plain_without_tls", "log")]),
    # file a, process 1 (announced by a start event): sids again from 1
    S(proc=1, sid=1, peer="10.0.0.3:6000", user="dave", login=False,
      attempts=[("PLAIN", "success", "upstream", None)]),
    S(proc=1, sid=2, peer="10.0.0.3:6001", user="dave", login=False,
      attempts=[("PLAIN", None, None, None)]),                    # no result
    # file a, process 2 (no start event: only the sid going backwards)
    S(proc=2, sid=1, peer="10.0.0.3:6002", user="erin", offered=["SCRAM-SHA-256"],
      server=["SCRAM-SHA-256"], attempts=[("SCRAM-SHA-256", "success", "upstream", None)],
      ua=("Gajim", None, None)),
    # file b: the same sids as file a, other sessions
    S(file="b", sid=99, peer=None, user="frank",                   # began before the log
      attempts=[("PLAIN", "success", "upstream", None)]),
    S(file="b", sid=1, peer="192.168.1.1:7000", user="alice",
      attempts=[("PLAIN", "success", "upstream", None)], downgrade=["cb", "mechanisms"]),
    S(file="b", sid=2, peer="192.168.1.1:7001", user="bob",
      attempts=[("SCRAM-SHA-1", "failure", "upstream", "temporary-auth-failure")]),
]

# Lines the report must skip and count: not JSON, JSON but not an object,
# missing or mistyped fields it relies on.
BAD_LINES = [
    "this is not json",
    "",
    "[1, 2, 3]",
    '"a string"',
    "42",
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1}',                         # no event
    '{"sid":1,"event":"close"}',                                          # no ts
    '{"ts":"2026-11-24T01:00:00.000Z","sid":"1","event":"close"}',        # sid a string
    '{"ts":"2026-11-24T01:00:00.000Z","event":"auth","mechanism":"PLAIN"}',  # no sid
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"connect"}',       # no peer
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"auth","mechanism":5}',
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"features","offered":"PLAIN"}',
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"policy","rule":"x"}',
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"close"} trailing',
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"login","outcome":',  # cut short
    '{"ts":"2026-11-24T01:00:00.000Z","sid":1,"event":"auth_result","outcome":true}',
]


class Clock:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        self.ms += 7
        s, ms = divmod(self.ms, 1000)
        m, s = divmod(s, 60)
        h, m = divmod(m, 60)
        return "2026-11-24T%02d:%02d:%02d.%03dZ" % (1 + h, m, s, ms)


def session_events(d):
    """The events of one session, in order, as dicts."""
    sid = d["sid"]
    out = []

    def e(event, **kw):
        ev = {"ts": None, "sid": sid, "event": event}
        ev.update(kw)
        out.append(ev)

    if d["peer"] is not None:
        e("connect", peer=d["peer"], local="127.0.0.1:5222", port_kind="starttls")
    if d["peer"] is not None:
        e("upstream", addr="127.0.0.1:15222", ok=True)
        e("stream", dir="c2s", n=1, to="lab.test", **{"from": None}, id=None, version="1.0")
        e("features", n=1, starttls="required", mechanisms=d["server"], offered=[], tls=False)
    if d["tls"]:
        e("starttls", dir="c2s")
        e("tls", leg="client", version=d["tls"], cipher="TLS_AES_256_GCM_SHA384",
          sni="lab.test", alpn=None, resumed=False)
        e("tls", leg="upstream", version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
          sni="lab.test", alpn=None, resumed=False, verified=True)
        e("features", n=2, starttls="none", mechanisms=d["server"], offered=d["offered"], tls=True)
    elif d["peer"] is not None:
        # no TLS: what the client saw is in the first features already
        out[-1]["offered"] = d["offered"]
    last = None
    policies = list(d["policies"])
    for mech, outcome, by, cond in d["attempts"]:
        kw = {"mechanism": mech, "tls": bool(d["tls"]), "sasl2": d["ua"] is not None,
              d["user_field"]: d["user"], "authzid": ""}
        if d["ua"] is not None:
            sw, dev, uid = d["ua"]
            kw.update(user_agent_software=sw, user_agent_device=dev, user_agent_id=uid)
        e("auth", **kw)
        e("sasl_step", dir="s2c", step=1)
        while policies:   # all with the first attempt
            rule, action = policies.pop(0)
            e("policy", rule=rule, action=action, detail="noted")
        if outcome is not None:
            e("auth_result", outcome=outcome, by=by, condition=cond,
              text=None)
        last = (mech, outcome)
    for rule, action in policies:
        e("policy", rule=rule, action=action, detail="noted")
    if d["login"] and d["attempts"]:
        ev = dict(user=d["user"] if d["login_user"] else None, jid=None, mechanism=last[0],
                  offered=d["offered"], client_tls=d["tls"] or False, upstream_tls="TLSv1.3",
                  outcome=last[1], ms=42)
        if d["downgrade"] is not None:
            ev["downgrade"] = d["downgrade"]
        e("login", **ev)
    if d["close"]:
        e("close", reason="client closed", ms=50, bytes_c2s=100, bytes_s2c=200)
    return out


def write_logs(dirname):
    """Writes a.log and b.log.gz; returns their names."""
    ts = Clock()
    files = {}
    for f in ("a", "b"):
        lines = []
        procs = sorted({d["proc"] for d in SESSIONS if d["file"] == f})
        for proc in procs:
            if f == "a" and proc == 1:
                lines.append(json.dumps({"ts": None, "event": "start", "version": "test"}))
            group = [session_events(d) for d in SESSIONS
                     if d["file"] == f and d["proc"] == proc]
            # interleave the sessions of one process, connects in sid order
            while any(group):
                for evs in group:
                    if evs:
                        lines.append(json.dumps(evs.pop(0)))
        # bad lines, scattered
        step = max(1, len(lines) // len(BAD_LINES))
        if f == "a":
            for i, bad in enumerate(BAD_LINES):
                lines.insert(min(len(lines), 1 + i * step + i), bad)
            lines.append(json.dumps({"ts": None, "event": "reload", "ok": True}))
        # fill in the times, in order
        out = []
        for line in lines:
            if line.startswith('{"ts": null'):
                line = line.replace('{"ts": null', '{"ts": "%s"' % ts(), 1)
            out.append(line)
        files[f] = "\n".join(out) + "\n"
    a = os.path.join(dirname, "a.log")
    b = os.path.join(dirname, "b.log.gz")
    with open(a, "w") as fh:
        fh.write(files["a"])
    with gzip.open(b, "wt") as fh:
        fh.write(files["b"])
    return a, b


# -- what the report should say, worked out from SESSIONS ---------------------

def expected(files):
    sess = [d for d in SESSIONS if d["file"] in files]
    x = {"sessions": 0, "partial": 0, "unclosed": 0, "users": collections.defaultdict(collections.Counter),
         "addrs": collections.defaultdict(collections.Counter),
         "mechs": collections.defaultdict(collections.Counter),
         "policy": collections.Counter(), "tls": collections.Counter(),
         "failures": collections.Counter(), "downgrades": 0, "ua": 0,
         "outcomes": collections.Counter()}
    for d in sess:
        if d["peer"] is None:
            x["partial"] += 1
            addr = "(no connect)"
        else:
            x["sessions"] += 1
            p = d["peer"]
            addr = p[1:p.index("]")] if p.startswith("[") else p.rsplit(":", 1)[0]
        if not d["close"]:
            x["unclosed"] += 1
        results = [a[1] for a in d["attempts"] if a[1] is not None]
        if not d["attempts"]:
            outcome = "no login"
        elif results:
            outcome = results[-1]
        else:
            outcome = "incomplete"
        x["outcomes"][outcome] += 1
        x["tls"][d["tls"] or "none"] += 1
        x["addrs"][addr]["sessions"] += 1
        x["addrs"][addr][outcome] += 1
        if d["attempts"]:
            x["users"][d["user"]]["sessions"] += 1
            x["users"][d["user"]][outcome] += 1
        for mech, res, by, cond in d["attempts"]:
            x["mechs"][mech]["attempts"] += 1
            x["mechs"][mech][res or "no_result"] += 1
            if res == "failure":
                x["failures"][(cond, by)] += 1
        for p in d["policies"]:
            x["policy"][p] += 1
        if d["downgrade"]:
            x["downgrades"] += 1
        if d["ua"]:
            x["ua"] += 1
    return x


def check_json(doc, x, label):
    s = doc["summary"]
    check_eq(s["sessions"], x["sessions"], "%s: sessions" % label)
    check_eq(s["partial_sessions"], x["partial"], "%s: partial sessions" % label)
    check_eq(s["unclosed_sessions"], x["unclosed"], "%s: unclosed sessions" % label)
    check_eq(s["success"], x["outcomes"]["success"], "%s: successful logins" % label)
    check_eq(s["failure"], x["outcomes"]["failure"], "%s: failed logins" % label)
    check_eq(s["outcomes"], dict(x["outcomes"]), "%s: outcomes" % label)
    check_eq(s["client_tls"], dict(x["tls"]), "%s: client TLS versions" % label)
    check_eq(s["downgrades"], x["downgrades"], "%s: downgrades" % label)
    check_eq(sum(s["user_agents"].values()), x["ua"], "%s: SASL2 user agents" % label)
    got = {u: (a["sessions"], a["success"], a["failure"]) for u, a in doc["users"].items()}
    want = {u: (c["sessions"], c["success"], c["failure"]) for u, c in x["users"].items()}
    check_eq(got, want, "%s: per user sessions/success/failure" % label)
    got = {k: (a["sessions"], a["success"], a["failure"]) for k, a in doc["addresses"].items()}
    want = {k: (c["sessions"], c["success"], c["failure"]) for k, c in x["addrs"].items()}
    check_eq(got, want, "%s: per address sessions/success/failure" % label)
    got = {m: (v["attempts"], v["success"], v["failure"], v["no_result"])
           for m, v in doc["mechanisms"].items() if v["attempts"]}
    want = {m: (c["attempts"], c["success"], c["failure"], c["no_result"])
            for m, c in x["mechs"].items()}
    check_eq(got, want, "%s: per mechanism attempts/success/failure/no result" % label)
    got = {(p["rule"], p["action"]): p["count"] for p in doc["policy"]}
    check_eq(got, dict(x["policy"]), "%s: policy rule/action counts" % label)
    got = {(f["condition"], f["by"]): f["count"] for f in doc["failures"]}
    check_eq(got, dict(x["failures"]), "%s: failure conditions" % label)


def test_synthetic(tmp):
    a, b = write_logs(tmp)
    x_a = expected({"a"})
    x_ab = expected({"a", "b"})

    # table mode
    rc, out, err = run([a])
    check_eq(rc, 0, "table: exit status")
    nbad = len(BAD_LINES)
    phrase = "%d bad lines skipped" % nbad
    check(phrase in out, "table: summary says '%s'" % phrase, out[-300:])
    check(phrase in err, "table: stderr says '%s'" % phrase, err)
    for title in ("Summary", "Per client address", "Per user", "Mechanisms chosen",
                  "Policy actions"):
        check(("\n%s\n" % title) in out, "table: has section '%s'" % title)
    rows = {}
    section = None
    for line in out.splitlines():
        if line in ("Per client address", "Per user", "Mechanisms chosen"):
            section = line
        f = line.split()
        if section == "Per user" and len(f) == 7 and f[1].isdigit():
            rows[f[0]] = tuple(int(v) for v in f[1:4])
        if section == "Mechanisms chosen" and len(f) == 8 and f[1].isdigit():
            rows["mech " + f[0]] = tuple(int(v) for v in f[1:4])
    want = x_a["users"]["alice"]
    check_eq(rows.get("alice"), (want["sessions"], want["success"], want["failure"]),
             "table: row of user alice (sessions, success, failure)")
    want = x_a["mechs"]["PLAIN"]
    check_eq(rows.get("mech PLAIN"), (want["attempts"], want["success"], want["failure"]),
             "table: row of mechanism PLAIN (attempts, success, failure)")
    check("Conversations / Pixel 7 / id d2f1" in out, "table: SASL2 user agent of bob")
    check("plain_without_tls  reject" in out, "table: policy rule and action")
    check(("\n::1 " in out) and "[::1]" not in out, "table: IPv6 address without port")

    # JSON mode, one file
    rc, out, err = run(["--json", a])
    check_eq(rc, 0, "json: exit status")
    try:
        doc = json.loads(out)
    except ValueError as e:
        check(False, "json: output is one JSON document", str(e))
        return
    check(True, "json: output is one JSON document")
    check_eq(doc["summary"]["bad_lines"], nbad, "json: bad lines")
    check_eq(doc["summary"]["restarts"], 2, "json: process restarts (start event, sid backwards)")
    check_eq(doc["summary"]["other_events"], 2, "json: process events (start, reload)")
    check_eq(doc["summary"]["files"], 1, "json: files")
    check_json(doc, x_a, "json")
    bob = doc["users"].get("bob", {})
    check_eq(bob.get("user_agents"), {"Conversations / Pixel 7 / id d2f1": 1},
             "json: user agent of bob")
    check_eq(bob.get("client_tls"), {"TLSv1.2": 1}, "json: client TLS of bob")
    carol = doc["users"].get("carol", {})
    check_eq(carol.get("chosen"), {"DIGEST-MD5": 1, "SCRAM-SHA-1": 1},
             "json: mechanisms chosen by carol (user from 'username')")
    check_eq(carol.get("downgrade_kinds"), {"tls": 1}, "json: downgrade of carol")
    check_eq(carol.get("addresses"), {"::1": 1}, "json: address of carol")
    mallory = doc["users"].get("mallory", {})
    check_eq(mallory.get("offered"), {"SCRAM-SHA-1": 1}, "json: mechanisms the client saw")
    check_eq(mallory.get("server_mechanisms"), {" ".join(SERVER): 1},
             "json: mechanisms the server offered")
    check_eq(mallory.get("client_tls"), {"none": 1}, "json: no TLS on the client leg")
    m = doc["mechanisms"].get("PLAIN", {})
    check_eq(m.get("by_proxy"), 1, "json: PLAIN refused by the proxy once")

    # two files, the same sids in both: keyed by (file, sid); gzip input
    rc, out, err = run(["--json", a, b])
    check_eq(rc, 0, "json two files: exit status")
    doc2 = json.loads(out) if rc == 0 else None
    if doc2:
        check_eq(doc2["summary"]["files"], 2, "json two files: files")
        check_json(doc2, x_ab, "json two files")
        check_eq(doc2["users"].get("alice", {}).get("downgrade_kinds"),
                 {"cb": 1, "mechanisms": 1}, "json two files: downgrade list")

    # the same file twice counts its sessions twice
    rc, out, err = run(["--json", a, a])
    if check_eq(rc, 0, "json same file twice: exit status"):
        check_eq(json.loads(out)["summary"]["sessions"], 2 * x_a["sessions"],
                 "json same file twice: sessions counted per file")

    # standard input
    with open(a, "rb") as fh:
        data = fh.read()
    rc, out, err = run(["--json", "-"], stdin=data)
    if check_eq(rc, 0, "stdin: exit status"):
        d = json.loads(out)
        check_eq((d["summary"]["sessions"], d["summary"]["bad_lines"]),
                 (x_a["sessions"], nbad), "stdin: sessions and bad lines")

    # usage errors and unreadable files
    check_eq(run([])[0], 2, "usage: no LOG gives exit 2")
    check_eq(run(["--bogus", a])[0], 2, "usage: unknown option gives exit 2")
    rc, out, err = run([a, os.path.join(tmp, "missing.log")])
    check_eq((rc, out), (2, ""), "usage: missing file gives exit 2 and no report")
    check_eq(run([tmp])[0], 2, "usage: a directory gives exit 2")
    corrupt = os.path.join(tmp, "corrupt.log.gz")
    with open(corrupt, "wb") as fh:
        fh.write(b"not gzip at all\n")
    check_eq(run([corrupt])[0], 2, "usage: a corrupt .gz gives exit 2")
    empty = os.path.join(tmp, "empty.log")
    open(empty, "w").close()
    rc, out, err = run(["--json", empty])
    check(rc == 0 and json.loads(out)["summary"]["sessions"] == 0, "empty log: exit 0, no sessions",
          "rc %d" % rc)
    binary = os.path.join(tmp, "binary.log")
    with open(binary, "wb") as fh:
        fh.write(b"\xff\xfe\x00garbage\n" + data.splitlines(True)[0])
    rc, out, err = run(["--json", binary])
    check(rc == 0 and json.loads(out)["summary"]["bad_lines"] == 1,
          "binary garbage: exit 0, one bad line", "rc %d %s" % (rc, err))


def test_volume(tmp):
    """A log of 100,000 lines: the count must come out exactly and quickly."""
    path = os.path.join(tmp, "volume.log")
    n_sessions = 10000
    with open(path, "w") as fh:
        for sid in range(1, n_sessions + 1):
            t = '{"ts":"2026-11-24T02:00:00.000Z","sid":%d,' % sid
            user = "user%d" % (sid % 50)
            ok = sid % 4 != 0
            fh.write(t + '"event":"connect","peer":"10.1.%d.%d:%d","local":"127.0.0.1:5222",'
                     '"port_kind":"starttls"}\n' % (sid % 3, sid % 20, 30000 + sid))
            fh.write(t + '"event":"features","n":1,"starttls":"required","mechanisms":'
                     '["PLAIN","SCRAM-SHA-1"],"offered":[],"tls":false}\n')
            fh.write(t + '"event":"tls","leg":"client","version":"TLSv1.3","cipher":"x",'
                     '"sni":null,"alpn":null,"resumed":false}\n')
            fh.write(t + '"event":"features","n":2,"starttls":"none","mechanisms":'
                     '["PLAIN","SCRAM-SHA-1"],"offered":["PLAIN","SCRAM-SHA-1"],"tls":true}\n')
            fh.write(t + '"event":"auth","mechanism":"PLAIN","tls":true,"sasl2":false,'
                     '"authcid":"%s","authzid":""}\n' % user)
            fh.write(t + '"event":"sasl_step","dir":"s2c","step":1}\n')
            fh.write(t + '"event":"auth_result","outcome":"%s","by":"upstream",'
                     '"condition":%s,"text":null}\n'
                     % ("success" if ok else "failure", "null" if ok else '"not-authorized"'))
            fh.write(t + '"event":"login","user":"%s","jid":null,"mechanism":"PLAIN",'
                     '"offered":["PLAIN","SCRAM-SHA-1"],"client_tls":"TLSv1.3",'
                     '"upstream_tls":"TLSv1.3","outcome":"%s","ms":5}\n'
                     % (user, "success" if ok else "failure"))
            fh.write(t + '"event":"bind","resource":"r","jid":"%s@lab.test/r"}\n' % user)
            fh.write(t + '"event":"close","reason":"client closed","ms":9,'
                     '"bytes_c2s":10,"bytes_s2c":20}\n')
    t0 = time.time()
    rc, out, err = run(["--json", path])
    dt = time.time() - t0
    if not check_eq(rc, 0, "volume: exit status"):
        return
    s = json.loads(out)["summary"]
    check_eq((s["lines"], s["sessions"], s["success"], s["failure"], s["bad_lines"]),
             (10 * n_sessions, n_sessions, n_sessions - n_sessions // 4, n_sessions // 4, 0),
             "volume: 100000 lines, sessions and outcomes")
    check(dt < 60, "volume: 100000 lines in %.2f s" % dt, "took %.1f s" % dt)


def count_connects(path):
    """Valid connect events in a log, counted the simple way."""
    n = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for line in fh:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if (isinstance(ev, dict) and ev.get("event") == "connect"
                    and isinstance(ev.get("ts"), str) and isinstance(ev.get("peer"), str)
                    and type(ev.get("sid")) is int):
                n += 1
    return n


def test_real(paths):
    total = 0
    for path in paths:
        name = os.path.basename(path)
        if not check(os.path.isfile(path), "real log %s: exists" % name, path):
            continue
        want = count_connects(path)
        total += want
        rc, out, err = run([path])
        check_eq(rc, 0, "real log %s: table exit status" % name)
        rc, out, err = run(["--json", path])
        if check_eq(rc, 0, "real log %s: json exit status" % name):
            check_eq(json.loads(out)["summary"]["sessions"], want,
                     "real log %s: sessions = connect events" % name)
    if len(paths) > 1:
        rc, out, err = run(["--json"] + paths)
        if check_eq(rc, 0, "real logs together: json exit status"):
            check_eq(json.loads(out)["summary"]["sessions"], total,
                     "real logs together: sessions = connect events")


def main():
    if not check(os.path.isfile(REPORT), "tools/report exists", REPORT):
        return 1
    with tempfile.TemporaryDirectory(prefix="xi-report-") as tmp:
        test_synthetic(tmp)
        test_volume(tmp)
    if len(sys.argv) > 1:
        test_real(sys.argv[1:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
