#!/usr/bin/env python3
"""Thundering herd: N mpgate gates start at once against ONE rate-limited emulator.

    python3 scripts/herd.py [--gates 1000] [--timeout 30] [--rate-limit 200] [--smoke]

Like a fleet scale-out: every gate runs in init mode (no COMMAND: exit 0 when entitled) with
its own MPGATE_RESULT_FILE, all released by one barrier, against `mpgate-emulator serve
--rate-limit N` (a token bucket; calls over it get HTTP 400 ThrottlingException like the
`throttle` fault). Prints how many gates succeeded and failed (by exit code), the
distribution of attempts and of time to entitlement, whether every gate ended inside its
deadline, and the arrival times of the calls at the emulator per 100 ms bucket (from its
--record log) with the gaps between a gate's attempts, which show the retries are jittered.

Builds the binaries with `cargo build --release --bins` unless --bin-dir is given. Every
child is bounded (gates by --timeout plus a grace period, then SIGKILL), the emulator is
stopped and the work directory removed on exit (--keep keeps it). Exits 0 when every gate
ended inside its deadline with 0 or 14 and the emulator stayed up, else 1 (2: usage).
Python 3.9+, standard library only, Linux.
"""

import argparse
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TIMEOUT = 3600
READY_TIMEOUT = 120
# A gate whose deadline passed is given this long to exit on its own, then killed.
KILL_GRACE = 30
# Temporary credentials (id, secret, session token), as a task role's: the emulator knows them
# (--credentials) and verifies every gate's SigV4 signature with them.
CREDENTIALS = ("ASIAHERDEXAMPLE00000", "herdSecretKeyNotARealOne0123456789abcdef", "herdSessionTokenNotARealOne0123456789")


def log(msg):
    print(f"[herd {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def parse_args():
    p = argparse.ArgumentParser(
        description="Start N mpgate gates at once against one rate-limited emulator."
    )
    p.add_argument("--gates", type=int, help="number of gates (default 1000; 50 with --smoke)")
    p.add_argument("--timeout", type=float, help="each gate's MPGATE_TIMEOUT in seconds (default 30; 10 with --smoke)")
    p.add_argument("--rate-limit", type=int, help="emulator --rate-limit, calls/s (default 200; 10 with --smoke)")
    p.add_argument("--rate-burst", type=int, help="emulator --rate-burst (default: the rate)")
    p.add_argument("--emulator-nice", type=int, default=-10, help="niceness of the emulator: the service runs on its own machines in real life, so it should not be starved of CPU by the herd, and its arrival times should be true (default -10, needs CAP_SYS_NICE; 0: off)")
    p.add_argument("--slack", type=float, default=2.0, help="allowed overrun of the deadline, seconds, counted from the release (default 2)")
    p.add_argument("--bin-dir", help="directory holding mpgate and mpgate-emulator (default: build them)")
    p.add_argument("--smoke", action="store_true", help="a short run: 50 gates, 10 s deadline, 10 calls/s")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, results, record)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    a = p.parse_args()
    defaults = (50, 10.0, 10) if a.smoke else (1000, 30.0, 200)
    a.gates = a.gates if a.gates is not None else defaults[0]
    a.timeout = a.timeout if a.timeout is not None else defaults[1]
    a.rate_limit = a.rate_limit if a.rate_limit is not None else defaults[2]
    if a.gates < 1 or a.timeout <= 0 or a.rate_limit < 1 or (a.rate_burst is not None and a.rate_burst < 1):
        p.error("--gates, --timeout, --rate-limit and --rate-burst must be positive")
    return a


def build():
    log("cargo build --release --bins")
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True, timeout=BUILD_TIMEOUT)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release")


def raise_nofile(needed):
    # The emulator inherits this limit: it holds one socket per gate.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log(f"warning: open files limit {soft} < {needed}: the emulator may run out of sockets")
    return soft


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def dist(values, fmt="{:.0f}"):
    if not values:
        return "n/a"
    parts = [("min", min(values)), ("p50", pct(values, 50)), ("p90", pct(values, 90)), ("p99", pct(values, 99)), ("max", max(values))]
    return "  ".join(f"{k} {fmt.format(v)}" for k, v in parts)


def read_ready_line(proc, limit):
    deadline = time.monotonic() + limit
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError("the emulator printed no ready line")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the emulator closed its stdout")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def main():
    a = parse_args()
    bin_dir = os.path.abspath(a.bin_dir) if a.bin_dir else build()
    mpgate = os.path.join(bin_dir, "mpgate")
    emulator = os.path.join(bin_dir, "mpgate-emulator")
    for b in (mpgate, emulator):
        if not os.access(b, os.X_OK):
            sys.exit(f"herd: {b} is not an executable")
    nofile = raise_nofile(a.gates * 2 + 256)
    work = tempfile.mkdtemp(prefix="mpgate-herd.")
    for d in ("results", "logs", "home", "term"):
        os.mkdir(os.path.join(work, d))
    emu = None
    pids = {}
    try:
        # ------------------------------------------------------------ the emulator
        record = os.path.join(work, "record.jsonl")
        cmd = [emulator, "serve", "--key-dir", os.path.join(work, "keys"), "--record", record,
               "--credentials", ":".join(CREDENTIALS), "--rate-limit", str(a.rate_limit)]
        if a.rate_burst:
            cmd += ["--rate-burst", str(a.rate_burst)]
        emu_err = open(os.path.join(work, "emulator.stderr"), "wb")
        emu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=emu_err)
        emu_err.close()
        ready = read_ready_line(emu, READY_TIMEOUT)
        if a.emulator_nice:
            try:
                os.setpriority(os.PRIO_PROCESS, emu.pid, a.emulator_nice)
            except OSError as e:
                log(f"warning: cannot set the emulator's niceness to {a.emulator_nice} ({e}); its arrival times include CPU starvation")
                a.emulator_nice = 0
        log(f"emulator {ready['url']} --rate-limit {a.rate_limit}" + (f" --rate-burst {a.rate_burst}" if a.rate_burst else ""))

        # ------------------------------------------------------------ the gates, held at a barrier
        go, ready_fifo = os.path.join(work, "go"), os.path.join(work, "ready")
        os.mkfifo(go)
        os.mkfifo(ready_fifo)
        # O_RDWR: opening a FIFO this way never blocks, and keeps it open for the children.
        go_fd = os.open(go, os.O_RDWR)
        ready_fd = os.open(ready_fifo, os.O_RDWR | os.O_NONBLOCK)
        base_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.path.join(work, "home"),
            "AWS_REGION": ready["region"],
            "AWS_ACCESS_KEY_ID": CREDENTIALS[0],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS[1],
            "AWS_SESSION_TOKEN": CREDENTIALS[2],
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_MARKETPLACE_METERING": ready["url"],
            "MPGATE_PRODUCT_CODE": ready["productCode"],
            "MPGATE_PUBLIC_KEY_FILE": ready["publicKeyFile"],
            "MPGATE_PUBLIC_KEY_VERSION": str(ready["publicKeyVersion"]),
            "MPGATE_TIMEOUT": f"{int(a.timeout * 1000)}ms",
            "MPGATE_LOG_FORMAT": "json",
        }
        # Each child says it is at the barrier, waits for its line on `go`, then execs the gate.
        barrier = 'printf . >"$1"; read -r x <"$0"; shift; exec "$@"'
        log(f"spawning {a.gates} gates (open files limit {nofile})")
        for i in range(a.gates):
            env = dict(base_env,
                       MPGATE_RESULT_FILE=os.path.join(work, "results", f"{i}.json"),
                       MPGATE_TERMINATION_LOG=os.path.join(work, "term", f"{i}.log"))
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.path.join(work, "logs", f"{i}.stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            ]
            argv = ["sh", "-c", barrier, go, ready_fifo, mpgate]
            pid = os.posix_spawn("/bin/sh", argv, env, file_actions=actions)
            pids[pid] = i
        arrived, limit = 0, time.monotonic() + READY_TIMEOUT
        while arrived < a.gates:
            if time.monotonic() > limit:
                raise RuntimeError(f"only {arrived} of {a.gates} gates reached the barrier")
            r, _, _ = select.select([ready_fd], [], [], 1.0)
            if r:
                try:
                    arrived += len(os.read(ready_fd, 65536))
                except BlockingIOError:
                    pass
        # ------------------------------------------------------------ release
        release_wall = time.time()
        release = time.monotonic()
        os.write(go_fd, b"\n" * a.gates)
        log(f"released {a.gates} gates")
        ends, statuses = {}, {}
        overdue = release + a.timeout + a.slack + KILL_GRACE
        killed = set()

        def watchdog():
            while len(ends) < len(pids):
                if time.monotonic() > overdue:
                    for pid in list(pids):
                        if pid not in ends:
                            killed.add(pid)
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    return
                time.sleep(0.2)

        threading.Thread(target=watchdog, daemon=True).start()
        while len(ends) < len(pids):
            # (No peak RSS: a posix_spawn'ed child inherits the Python parent's in ru_maxrss
            # across exec. bench/run.sh measures the gate's own.)
            pid, status, _ = os.wait4(-1, 0)
            now = time.monotonic()
            if pid == emu.pid:
                emu.returncode = os.waitstatus_to_exitcode(status)
                raise RuntimeError(f"the emulator exited ({emu.returncode}) during the run")
            if pid in pids:
                ends[pid] = now - release
                statuses[pid] = os.waitstatus_to_exitcode(status)
        log(f"all gates ended after {max(ends.values()):.2f}s")
        os.close(go_fd)
        os.close(ready_fd)
        emu.send_signal(signal.SIGTERM)
        try:
            emu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emu.kill()
            emu.wait()
        emu = None

        summary = analyse(a, work, record, release_wall, pids, ends, statuses, killed)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
        return 0 if summary["ok"] else 1
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if emu is not None and emu.poll() is None:
            emu.kill()
            emu.wait()
        if a.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def analyse(a, work, record, release_wall, pids, ends, statuses, killed):
    calls = []
    with open(record) as f:
        for line in f:
            if line.strip():
                calls.append(json.loads(line))
    by_nonce = {}
    for c in calls:
        by_nonce.setdefault(c.get("nonce"), []).append(c)
    gates = []
    for pid, i in sorted(pids.items(), key=lambda kv: kv[1]):
        result = {}
        try:
            with open(os.path.join(work, "results", f"{i}.json")) as f:
                result = json.load(f)
        except (OSError, ValueError):
            pass
        own_ms = None
        try:
            with open(os.path.join(work, "logs", f"{i}.stderr")) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("entitlement") == "verified":
                        own_ms = entry.get("elapsed_ms")
        except OSError:
            pass
        nonce = result.get("nonce")
        gates.append({
            "code": statuses.get(pid),
            "elapsed": ends.get(pid),
            "own_ms": own_ms,
            "attempts": len(by_nonce.get(nonce, [])) if nonce else 0,
            "result_attempts": result.get("attempts"),
            "outcome": result.get("outcome"),
            "message": result.get("message", ""),
            "killed": pid in killed,
        })

    ok_gates = [g for g in gates if g["code"] == 0]
    failed = [g for g in gates if g["code"] != 0]
    codes = {}
    for g in failed:
        codes[g["code"]] = codes.get(g["code"], 0) + 1
    limit = a.timeout + a.slack
    max_elapsed = max(g["elapsed"] for g in gates)
    overran = [g for g in gates if g["elapsed"] > limit]
    admitted = [c for c in calls if c.get("status") == 200]
    throttled = [c for c in calls if c.get("fault") == "rate-limit"]
    t = lambda c: c["receivedAtMs"] / 1000.0 - release_wall

    print()
    print(f"Thundering herd: {a.gates} gates in init mode, MPGATE_TIMEOUT={a.timeout:g}s, one emulator "
          f"--rate-limit {a.rate_limit}/s (burst {a.rate_burst or a.rate_limit}), {os.cpu_count()} CPUs, emulator at nice {a.emulator_nice}")
    print(f"  succeeded (exit 0): {len(ok_gates)}")
    print(f"  failed: {len(failed)}" + ("" if not failed else "  by exit code: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: str(kv[0])))))
    for code in sorted(codes, key=str):
        example = next(g for g in failed if g["code"] == code)
        print(f"    e.g. exit {code}: {example['message'][:200]}")
    print(f"  attempts per gate (emulator record, by nonce): {dist([g['attempts'] for g in gates])}")
    if ok_gates:
        print(f"  attempts per entitled gate (result file):      {dist([g['result_attempts'] or 0 for g in ok_gates])}")
        print(f"  time to entitlement from release, s:           {dist([g['elapsed'] for g in ok_gates], '{:.2f}')}")
        own = [g["own_ms"] / 1000.0 for g in ok_gates if g["own_ms"] is not None]
        print(f"  time to entitlement, gate's own elapsed_ms, s: {dist(own, '{:.2f}')}")
    print(f"  every gate ended inside its deadline: {'yes' if not overran else 'NO'} "
          f"(max {max_elapsed:.2f}s from release; limit {a.timeout:g}s + {a.slack:g}s slack; {len(overran)} over, {len(killed)} killed)")
    nonces = [g for g in gates if g["attempts"]]
    print(f"  calls at the emulator: {len(calls)} ({len(admitted)} answered 200, {len(throttled)} throttled); "
          f"distinct nonces {len([n for n in by_nonce if n])}, gates whose calls all share one nonce: {len(nonces)}")
    if admitted:
        span = max(t(c) for c in admitted) - min(t(c) for c in calls)
        print(f"  admitted rate: {len(admitted)} in {span:.2f}s = {len(admitted) / span if span > 0 else float('nan'):.0f}/s "
              f"(bucket {a.rate_limit}/s + burst {a.rate_burst or a.rate_limit})")

    # Gaps between consecutive attempts of one gate: full jitter makes them spread out.
    gaps = {}
    for cs in by_nonce.values():
        cs = sorted(cs, key=lambda c: c["receivedAtMs"])
        for k in range(1, len(cs)):
            gaps.setdefault(k, []).append((cs[k]["receivedAtMs"] - cs[k - 1]["receivedAtMs"]) / 1000.0)
    if gaps:
        print("  gap between a gate's call k and call k+1, s (jittered exponential backoff, capped at 5 s):")
        for k in sorted(gaps)[:8]:
            g = gaps[k]
            print(f"    k={k}: n={len(g):4d}  {dist(g, '{:.3f}')}")

    # Arrivals per 100 ms bucket.
    buckets = {}
    for c in calls:
        b = int(t(c) * 10)
        ok = c.get("status") == 200
        n = buckets.setdefault(b, [0, 0])
        n[0 if ok else 1] += 1
    if buckets:
        first, last = min(buckets), max(buckets)
        peak = max(sum(v) for v in buckets.values())
        retries = []
        for nonce, cs in by_nonce.items():
            if nonce:
                retries += sorted(cs, key=lambda c: c["receivedAtMs"])[1:]
        rb = {}
        for c in retries:
            rb[int(t(c) * 10)] = rb.get(int(t(c) * 10), 0) + 1
        scale = max(1, -(-peak // 60))
        print(f"  arrivals at the emulator per 100 ms after the release ('#' answered 200, '.' throttled; one mark = up to {scale} calls):")
        for b in range(first, last + 1):
            ok_n, thr_n = buckets.get(b, [0, 0])
            bar = "#" * (-(-ok_n // scale)) + "." * (-(-thr_n // scale))
            print(f"    {b / 10:5.1f}s {ok_n + thr_n:5d} {bar}")
        if rb:
            active = max(rb) - min(rb) + 1
            print(f"  retries: {len(retries)} over {active} buckets of 100 ms; busiest bucket holds "
                  f"{max(rb.values())} ({100.0 * max(rb.values()) / len(retries):.1f}%), "
                  f"mean {len(retries) / active:.1f} per bucket")
    ok = not overran and not killed and all(g["code"] in (0, 14) for g in gates)
    print(f"  verdict: {'PASS' if ok else 'FAIL'}")
    return {
        "ok": ok, "gates": a.gates, "timeout": a.timeout, "rateLimit": a.rate_limit,
        "succeeded": len(ok_gates), "failedByCode": {str(k): v for k, v in codes.items()},
        "maxElapsed": max_elapsed, "calls": len(calls), "admitted": len(admitted), "throttled": len(throttled),
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"herd: error: {e}", file=sys.stderr)
        sys.exit(1)
