"""Secrets in the proxy's own memory (issue 8 item 9): after a session has
ended, no password and no base64 PLAIN payload may be left anywhere in the
process (freed element text, output buffers, Expat's buffers, the read
buffer, OpenSSL's record buffers), and the process may not dump core.

Memory is read from outside, as root, through /proc/PID/mem: what a core
dump or a debugger attached after the fact would see.
"""

import os
import re
import shutil
import stat
from pathlib import Path

import harness
import raw
from cases import USERS, WRONG, case, sids

# A mapping this large is reserved address space, not data: ASan's shadow
# (about 16 TiB, only poison bytes) is the one met in practice.
HUGE_REGION = 1 << 36
CHUNK = 4 << 20
# Reading these fails by design (kernel-provided pages).
UNREADABLE = ("[vvar]", "[vvar_vclock]", "[vsyscall]")
NOBODY = 65534


def readable_regions(pid):
    """(start, end, name, resident) for each readable mapping of pid, from
    /proc/PID/smaps; resident: Rss + Swap in kB (0: never touched, so
    zeros or the file's own bytes)."""
    regions, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4), 0]
                if cur[2][0] == "r":
                    regions.append(cur)
            elif cur is not None and line.startswith(("Rss:", "Swap:")):
                cur[4] += int(line.split()[1])
    return [(lo, hi, name, resident) for lo, hi, _, name, resident in regions]


def find_in_memory(pid, needles):
    """Where needles occur in the memory of pid and of each of its workers:
    (needle, address, where) for each (at most one per needle and chunk
    read), and the mappings skipped."""
    hits, skipped = [], []
    for p in harness.proc_tree(pid):
        h, s = find_in_process(p, needles)
        hits += [(n, a, f"pid {p}: {w}") for n, a, w in h]
        skipped += s
    return hits, skipped


def find_in_process(pid, needles):
    longest = max(len(n) for n in needles)
    hits, skipped = [], []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi, name, resident in readable_regions(pid):
            if name in UNREADABLE or resident == 0:
                continue
            if hi - lo >= HUGE_REGION:
                skipped.append(f"{lo:#x}-{hi:#x} {name or '(anonymous)'}")
                continue
            addr, tail = lo, b""
            while addr < hi:
                n = min(CHUNK, hi - addr)
                try:
                    mem.seek(addr)
                    data = tail + mem.read(n)
                except OSError:
                    data, tail = b"", b""
                base = addr - len(tail)
                for needle in needles:
                    i = data.find(needle)
                    if i >= 0:
                        hits.append((needle, base + i, f"{needle[:24]!r} at {base + i:#x} "
                                     f"({name or 'anonymous'} +{base + i - lo:#x})"))
                tail = data[-(longest - 1):] if data else b""
                addr += n
    return hits, skipped


# A freed block begins with the allocator's own links (glibc's tcache: 16
# bytes; ASan: 8), so a secret that began a block is left only from there
# on: that tail is searched for too, when long enough not to match by chance.
FREED_HEAD = 16
MIN_TAIL = 12


def secret_needles(password, user):
    forms = harness.secret_forms(password, [user])
    return forms | {f[FREED_HEAD:] for f in forms if len(f) - FREED_HEAD >= MIN_TAIL}


def places(hits):
    """One description per place: a hit within an earlier one (a tail
    inside a whole form) is the same copy."""
    out, end = [], -1
    for needle, addr, where in sorted(hits, key=lambda h: (h[1], -len(h[0]))):
        if addr >= end:
            out.append(where)
        end = max(end, addr + len(needle))
    return out


def fd_count(pid):
    """Open descriptors of pid and its workers."""
    try:
        return sum(len(os.listdir(f"/proc/{p}/fd")) for p in harness.proc_tree(pid))
    except OSError:
        return None


def failed_plain(ctx, px, user, password):
    """STARTTLS, then a PLAIN attempt the server refuses. The <auth> comes
    after a long whitespace keepalive in the same read, so the replies read
    later into the same static buffer (all shorter) do not overwrite it."""
    c = ctx.raw(px.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send(" " * 2048 + f"<auth xmlns='{raw.NS_SASL}' mechanism='PLAIN'>"
           f"{raw.plain_payload(user, password)}</auth>")
    el = c.next_element()
    ctx.check(el is not None and raw.local(el.tag) == "failure",
              f"wrong password: want <failure/>, got {c.describe(el)}")
    c.close()


@case("secrets_not_in_memory")
def secrets_not_in_memory(ctx):
    """A PLAIN login and a failed PLAIN attempt over STARTTLS: once both
    sessions are gone, neither password (nor a base64 PLAIN payload carrying
    it) is anywhere in the proxy's memory."""
    if os.geteuid() != 0:
        ctx.skip("reading another process's memory (/proc/PID/mem of a non-dumpable "
                 "process) needs root")
    px = ctx.proxy()
    pid = px.proc.pid
    idle_fds = harness.wait_until(lambda: fd_count(pid), 5)

    c = ctx.raw(px.port)
    try:
        raw.login_plain(c, "alice", USERS["alice"])
        c.send("</stream:stream>")
        c.wait_closed()
    except AssertionError as e:
        ctx.require(False, f"login of alice failed: {e}")
    finally:
        c.close()
    failed_plain(ctx, px, "alice", WRONG)

    # Ended: both close events logged, both legs' sockets closed. A session
    # is freed just before the loop next waits, so a later connection's
    # connect event shows the two are freed, not only closed.
    for i in (0, 1):
        ctx.session(px, i, timeout=15)
    ctx.require(not ctx.problems, "the sessions did not end")
    ctx.require(harness.wait_until(lambda: fd_count(pid) == idle_fds, 10),
                f"the sessions' sockets stay open ({fd_count(pid)} fds, {idle_fds} when idle)")
    fence = ctx.raw(px.port)
    ctx.require(harness.wait_until(lambda: len(sids(px.events.read())) >= 3, 5),
                "no connect event for the fence connection")
    fence.close()

    # The event log's path is in the proxy's heap (its configuration): not
    # finding it would mean the search reads nothing.
    canary = str(px.event_log).encode()
    needles = secret_needles(USERS["alice"], "alice") | secret_needles(WRONG, "alice")
    needles = sorted(needles) + [canary]
    hits, skipped = find_in_memory(pid, needles)
    if skipped:
        ctx.note(f"not read (reserved address space): {skipped}")
    read = {w.split(":")[0] for n, _, w in hits if n == canary}
    tree = harness.proc_tree(pid)
    ctx.require(read == {f"pid {p}" for p in tree},
                f"the memory search found the event log's path in {sorted(read)} of the "
                f"processes {tree}: it reads nothing in the others")
    leaks = places([h for h in hits if h[0] != canary])
    ctx.check(not leaks, f"secrets at {len(leaks)} place(s) in the proxy's memory after the "
              f"sessions ended: {'; '.join(leaks[:8])}")


def core_limit(pid):
    """(soft, hard) of "Max core file size" in /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return tuple(line.split()[4:6])
    return None


def unprivileged(px):
    """Makes px start as user nobody, without the proxy's own `user` key:
    the kernel leaves such a process dumpable, so only the proxy itself can
    make it otherwise. Its directory and key become nobody's."""
    os.chown(px.dir, NOBODY, NOBODY)
    key = px.dir / "server.key"
    shutil.copy(px.keys["key"], key)
    os.chown(key, NOBODY, NOBODY)
    px.keys["key"] = str(key)
    wrapper = px.dir / "as-nobody"
    wrapper.write_text("#!/bin/sh\nexec setpriv --reuid=%d --regid=%d --clear-groups "
                       "--pdeathsig KILL -- '%s' \"$@\"\n" % (NOBODY, NOBODY, px.binary))
    wrapper.chmod(stat.S_IRWXU)
    px.binary = str(wrapper)


@case("core_dumps_off")
def core_dumps_off(ctx):
    """The running proxy has a core size limit of 0 (soft and hard), and it is
    not dumpable: started as an unprivileged user, its /proc files belong to
    root, which is how the kernel marks a process no other one of that user
    may read or ptrace."""
    px = ctx.proxy()
    for p in harness.proc_tree(px.proc.pid):  # the supervisor and each worker
        limit = core_limit(p)
        ctx.check(limit == ("0", "0"), f"pid {p}: Max core file size {limit} (want 0 0)")

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if not ctx.problems:
            ctx.skip("dumpability: starting the proxy as another user needs root and setpriv")
        return
    px2 = ctx.proxy(start=False)
    unprivileged(px2)
    try:
        px2.start()
    except harness.HarnessError as e:
        ctx.require(False, f"proxy as nobody did not start: {e}")
    harness.wait_until(lambda: len(harness.proc_tree(px2.proc.pid)) > 1 or None, 2)
    for pid in harness.proc_tree(px2.proc.pid):
        status = Path(f"/proc/{pid}/status").read_text()
        uids = [l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")]
        ctx.require(uids == [[str(NOBODY)] * 4], f"pid {pid} runs as uids {uids}, not nobody")
        owner = os.stat(f"/proc/{pid}/mem").st_uid
        ctx.check(owner == 0, f"/proc/{pid}/mem belongs to uid {owner}: the proxy is dumpable")
        ctx.check(core_limit(pid) == ("0", "0"),
                  f"as nobody: pid {pid}: Max core file size {core_limit(pid)}")
