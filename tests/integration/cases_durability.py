"""The audit log never loses a record silently (issue 15, part 1).

The event log is put on a small private tmpfs that a filler file fills up,
as a full disk would be: the proxy must write whole lines only, keep what
it could not write and write it once there is room, say on stderr that it
is failing, count what its bounded queue could not hold in one log_gap
line once writing works again (and in the stop event), and with
event_log_full = refuse turn logins and connections away while it cannot
record them. The tmpfs is removed after the case, also on failure.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import harness
import raw
from cases import case, USERS

PASSWORD = USERS["alice"]


class FullDisk:
    """A tmpfs of size bytes on a temp dir; fill() takes all its room,
    free() gives it back."""

    def __init__(self, size="64k"):
        self.dir = Path(tempfile.mkdtemp(prefix="xi-disk-"))
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                            str(self.dir)], capture_output=True, text=True)
        self.mounted = r.returncode == 0
        self.why = r.stderr.strip()
        self.filler = self.dir / "filler"

    def fill(self):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):  # down to the last byte
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self):
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass

    def remove(self):
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def on_disk(ctx, disk, **keys):
    """A proxy whose event log is on disk (keys: more configuration)."""
    px = ctx.proxy(start=False, **keys)
    px.keys["event_log"] = str(disk.dir / "events.jsonl")
    px.event_log = disk.dir / "events.jsonl"
    px.events = harness.EventLog(px.event_log)
    try:
        px.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy did not start: {e}")
    return px


def lines(path):
    try:
        return Path(path).read_bytes().split(b"\n")
    except FileNotFoundError:
        return [b""]


def whole_lines(ctx, path):
    """Every line of the file is one JSON object and the file ends with a
    newline: nothing was cut. Returns the events."""
    ls = lines(path)
    ctx.check(ls[-1] == b"", f"the event log ends inside a line: {ls[-1][:80]!r}")
    events = []
    for i, line in enumerate(ls[:-1]):
        try:
            ev = json.loads(line)
            ctx.check(isinstance(ev, dict), f"line {i + 1} is not an object")
            events.append(ev)
        except ValueError:
            ctx.check(False, f"line {i + 1} is not JSON: {line[:100]!r}")
    return events


def login(ctx, px, n=1):
    ok = 0
    for _ in range(n):
        c = ctx.raw(px.port)
        try:
            raw.login_plain(c, "alice", PASSWORD)
            c.send("</stream:stream>")
            c.wait_closed()
            ok += 1
        except (AssertionError, OSError) as e:
            ctx.note(f"login: {e}")
        finally:
            c.close()
    return ok


def finish(ctx, px, disk):
    """Stops the proxy with the disk free, then keeps a copy of its log
    beside its other files (for the case's teardown checks) before the
    tmpfs goes."""
    disk.free()
    px.stop()
    copy = px.dir / "events.jsonl"
    if px.event_log.exists():
        shutil.copy(px.event_log, copy)
    px.event_log = copy
    px.events = harness.EventLog(copy)
    px.keys["event_log"] = str(copy)


def sessions_accounted(ctx, events):
    """Every session that connected has its close, or is named by a log_gap
    (or a gap says more sessions were lost than it names)."""
    gaps = [e for e in events if e.get("event") == "log_gap"]
    lost = {sid for g in gaps for sid in g.get("sessions", [])}
    truncated = any(g.get("sessions_truncated") for g in gaps)
    closed = {e["sid"] for e in events if e.get("event") == "close"}
    for e in events:
        if e.get("event") == "connect":
            sid = e["sid"]
            ctx.check(sid in closed or sid in lost or truncated,
                      f"session {sid} has no close and no log_gap names it")
    return gaps


@case("event_log_disk_full_queued", proxy=True)
def event_log_disk_full_queued(ctx):
    """The disk fills while logins go on: they all succeed (event_log_full =
    continue), stderr says the log is failing, and once there is room every
    event is written, in whole lines, with nothing lost (the queue held
    them): no log_gap, every session's close is there."""
    if os.geteuid() != 0:
        ctx.skip("a private tmpfs needs root (mount)")
    disk = FullDisk("64k")
    try:
        if not disk.mounted:
            ctx.skip(f"cannot mount a tmpfs: {disk.why}")
        px = on_disk(ctx, disk)
        ctx.require(px.events.wait("start", 5), "no start event")
        disk.fill()
        done = login(ctx, px, 20)
        ctx.check(done == 20, f"{done} of 20 logins succeeded with the disk full")
        warned = harness.wait_until(lambda: "write failed: No space left" in px.stderr(), 5)
        ctx.check(warned, "nothing on stderr about the failing event log")
        disk.free()
        got = harness.wait_until(
            lambda: len([e for e in whole_lines(ctx, px.event_log) if e.get("event") == "login"])
            >= 20, 10)
        ctx.check(got, "the 20 login records were not written once the disk had room")
        events = whole_lines(ctx, px.event_log)
        ctx.check(not [e for e in events if e.get("event") == "log_gap"],
                  "a log_gap though the queue held everything")
        sessions_accounted(ctx, events)
        finish(ctx, px, disk)
        stop = [e for e in whole_lines(ctx, px.event_log) if e.get("event") == "stop"]
        ctx.check(stop and stop[-1].get("events_lost") == 0 and stop[-1].get("log_gaps") == 0,
                  f"stop event totals: {stop[-1:] }")
    finally:
        disk.remove()


@case("event_log_gap_counted", proxy=True)
def event_log_gap_counted(ctx):
    """With a small queue (event_log_queue = 16k) the full disk outlasts it:
    lines are dropped, never cut; once writing works again one log_gap says
    how many events were lost and which sessions, every session is in the
    log or named by the gap, and the stop event carries the totals."""
    if os.geteuid() != 0:
        ctx.skip("a private tmpfs needs root (mount)")
    disk = FullDisk("64k")
    try:
        if not disk.mounted:
            ctx.skip(f"cannot mount a tmpfs: {disk.why}")
        px = on_disk(ctx, disk, event_log_queue="16k")
        ctx.require(px.events.wait("start", 5), "no start event")
        disk.fill()
        done = login(ctx, px, 30)
        ctx.check(done == 30, f"{done} of 30 logins succeeded with the disk full")
        ctx.check(harness.wait_until(lambda: "queue full" in px.stderr(), 5),
                  "nothing on stderr about dropped lines")
        disk.free()
        # the first event after the disk has room carries the gap before it
        ctx.check(login(ctx, px, 1) == 1, "a login after the disk was freed failed")
        gap = px.events.wait("log_gap", 10)
        ctx.require(gap, "no log_gap event after the disk was freed")
        # with workers = N each worker's writer has its own queue and says
        # its own gap (the others' within a second, or at their stop):
        # one per writer that lost lines, their sum in the stop totals
        finish(ctx, px, disk)
        events = whole_lines(ctx, px.event_log)
        gaps = sessions_accounted(ctx, events)
        ctx.check(1 <= len(gaps) <= px.workers(),
                  f"{len(gaps)} log_gap events (want one per writer, {px.workers()} at most)")
        ctx.check(all(g.get("events", 0) > 0 and g.get("sessions") for g in gaps),
                  f"log_gap without counts: {gaps}")
        logins = [e for e in events if e.get("event") == "login"]
        lost_sids = {sid for g in gaps for sid in g.get("sessions", [])}
        ctx.check(len({e["sid"] for e in logins} | lost_sids) >= 31,
                  "some login is neither recorded nor counted lost")
        stop = [e for e in events if e.get("event") == "stop"]
        ctx.check(stop and stop[-1].get("events_lost") == sum(g["events"] for g in gaps)
                  and stop[-1].get("log_gaps") == len(gaps),
                  f"stop totals {stop[-1:]} do not match the gaps {gaps}")
    finally:
        disk.remove()


@case("event_log_full_refuse", proxy=True)
def event_log_full_refuse(ctx):
    """event_log_full = refuse: while the event log cannot write, a login
    already under way gets <temporary-auth-failure/> (rule event_log_full)
    and new connections are closed at once; once the disk has room again
    logins work."""
    if os.geteuid() != 0:
        ctx.skip("a private tmpfs needs root (mount)")
    disk = FullDisk("64k")
    try:
        if not disk.mounted:
            ctx.skip(f"cannot mount a tmpfs: {disk.why}")
        px = on_disk(ctx, disk, event_log_full="refuse")
        ctx.require(px.events.wait("start", 5), "no start event")
        c = ctx.raw(px.port)
        f = c.open_stream()
        c.starttls()
        c.open_stream()
        disk.fill()
        # something to write: other connections' events, until the room
        # left in the log's last page is gone and a write fails
        def provoke():
            try:
                other = raw.RawClient(px.port, ca=harness.CA)
                other.open_stream()
                other.close()
            except (AssertionError, OSError):
                pass
            return "write failed" in px.stderr()
        ctx.check(harness.wait_until(provoke, 10, interval=0.05),
                  "the writer never said it failed")
        c.auth("PLAIN", raw.plain_payload("alice", PASSWORD))
        el = c.next_element()
        ctx.check(el is not None and raw.local(el.tag) == "failure"
                  and raw.sasl_condition(el) == "temporary-auth-failure",
                  f"login while the log fails: {c.describe(el)}")
        c.close()
        refused = ctx.raw(px.port)
        try:
            refused.sock.settimeout(5)
            data = refused.sock.recv(100)
        except OSError:
            data = b""
        ctx.check(data == b"", f"a new connection was served while the log failed: {data!r}")
        disk.free()
        ok = harness.wait_until(lambda: login(ctx, px, 1) == 1, 10, interval=0.3)
        ctx.check(ok, "no login succeeded after the disk had room again")
        # read once the proxy has stopped: with workers = N the worker that
        # refused retries its own queue on its own back-off (up to 1 s),
        # and the login above may have landed on another one
        finish(ctx, px, disk)
        events = whole_lines(ctx, px.event_log)
        ctx.check(any(e.get("event") == "policy" and e.get("rule") == "event_log_full"
                      for e in events) or any(e.get("event") == "log_gap" for e in events),
                  "the refusal is neither logged nor counted in a gap")
    finally:
        disk.remove()
