#!/usr/bin/env python3
"""What the metering agent costs while its workload sleeps: memory and wake-ups.

Starts the emulator and two mpgate usage gates at once, each the parent of its workload:

  push     the dimension `nodes` (pushed), the workload `sleep`;
  scrape   `nodes` and `requests=bench_requests_total:counter` read with --scrape every
           INTERVAL (the default 15 s unless given) from the workload, a small HTTP server
           of this script serving a fixed Prometheus text.

Once both agents have started it samples /proc/PID/status and /proc/PID/task/*/status every
50 ms for SECONDS: VmRSS and VmHWM at the end, and the context switches of every mpgate
thread (voluntary and involuntary: each is the thread waking up). Switches less than 0.5 s
apart are one wake-up; the report gives their number and the shortest time between two.
The scrape gate's workload logs the time of every request it answers: the scrapes in the
window and the shortest time between two. An agent with no timer of its own wakes 0 times;
with --scrape it scrapes once an interval, and tokio's timer wheel wakes it once or twice
more before each scrape (it parks to the next slot boundary of the timer's level, then of
the finer ones).

Standard library only. Usage: python3 bench/usage_idle.py --mpgate BIN --emulator BIN
[--seconds 20] [--scrape-interval 15s] [--work DIR] [--json]. Every child is stopped at the
end; an agent that exits early fails the run.
"""

import argparse
import http.server
import json
import os
import socket
import subprocess
import sys
import time

from usage_push import stop  # beside this script

METRICS = b"# TYPE bench_requests_total counter\nbench_requests_total 42\n"
SAMPLE = 0.05
SAME_WAKE = 0.5


def serve_metrics(port, log):
    """The scrape gate's workload: answers GET /metrics until it is stopped, each request's
    time (CLOCK_MONOTONIC, as time.monotonic in the parent) a line of `log`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with open(log, "a") as f:
                f.write(f"{time.monotonic()}\n")
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(METRICS)))
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def switches(pid):
    """Context switches of every thread of `pid` so far, and its thread count."""
    total, threads = 0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
            threads += 1
        except FileNotFoundError:  # a thread that just ended
            pass
    return total, threads


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mpgate", required=False)
    parser.add_argument("--emulator", required=False)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--scrape-interval", help="e.g. 2s (default: mpgate's, 15s)")
    parser.add_argument("--work", default="target/bench-idle")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-metrics", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scrape-log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_metrics:
        return serve_metrics(args.serve_metrics, args.scrape_log)
    if not (args.mpgate and args.emulator):
        parser.error("--mpgate and --emulator are required")
    work = os.path.abspath(args.work)
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    emulator = subprocess.Popen(
        [args.emulator, "serve", "--dimension", "nodes", "--dimension", "requests",
         "--credentials", "ASIABENCHMARKKEY0001:benchSecret:benchToken"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    gates = {}
    try:
        ready = json.loads(emulator.stdout.readline())
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_ACCESS_KEY_ID": "ASIABENCHMARKKEY0001", "AWS_SECRET_ACCESS_KEY": "benchSecret",
            "AWS_SESSION_TOKEN": "benchToken", "AWS_REGION": ready["region"],
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_MARKETPLACE_METERING": ready["url"],
            "MPGATE_PRICING": "usage", "MPGATE_PRODUCT_CODE": ready["productCode"],
            "MPGATE_LOG": "warn",
        }
        port = free_port()
        setups = {
            "push": ({"MPGATE_DIMENSIONS": "nodes"}, ["sleep", "3600"]),
            "scrape": (
                {"MPGATE_DIMENSIONS": "nodes,requests=bench_requests_total:counter",
                 "MPGATE_SCRAPE_URL": f"http://127.0.0.1:{port}/metrics",
                 **({"MPGATE_SCRAPE_INTERVAL": args.scrape_interval}
                    if args.scrape_interval else {})},
                [sys.executable, os.path.abspath(__file__), "--serve-metrics", str(port),
                 "--scrape-log", os.path.join(work, "scrapes")]),
        }
        for name, (extra, workload) in setups.items():
            ledger = os.path.join(work, name)
            env = {**base, **extra, "MPGATE_LEDGER_DIR": ledger}
            gates[name] = subprocess.Popen([args.mpgate, "--", *workload], env=env,
                                           stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(work, f"{name}.err"), "w"))
        deadline = time.monotonic() + 30
        for name in gates:
            sock = os.path.join(work, name, "usage.sock")
            while not os.path.exists(sock):
                if time.monotonic() > deadline or gates[name].poll() is not None:
                    raise SystemExit(f"{name}: the agent's socket never appeared")
                time.sleep(0.02)
        # The start's own work (the hand-over, the first scrape's connection) settles first.
        time.sleep(1.0)
        last = {name: switches(g.pid)[0] for name, g in gates.items()}
        wakes = {name: [] for name in gates}
        start = time.monotonic()
        end = start + args.seconds
        while time.monotonic() < end:
            time.sleep(SAMPLE)
            now = time.monotonic() - start
            for name, gate in gates.items():
                if gate.poll() is not None:
                    raise SystemExit(f"{name}: mpgate exited with {gate.returncode}")
                count, _ = switches(gate.pid)
                if count != last[name]:
                    wakes[name].append((now, count - last[name]))
                    last[name] = count
        result = {}
        for name, gate in gates.items():
            events = []
            for at, n in wakes[name]:
                if events and at - events[-1][1] < SAME_WAKE:
                    events[-1][1] = at
                    events[-1][2] += n
                else:
                    events.append([at, at, n])
            gaps = [b[0] - a[0] for a, b in zip(events, events[1:])]
            mem = memory(gate.pid)
            _, threads = switches(gate.pid)
            result[name] = {
                "rss_kib": mem["VmRSS"], "hwm_kib": mem["VmHWM"], "threads": threads,
                "switches": sum(e[2] for e in events), "wakeups": len(events),
                "min_gap_s": round(min(gaps), 2) if gaps else None,
                "seconds": args.seconds,
            }
        # The scrapes the workload answered inside the window, and the shortest time between two.
        try:
            with open(os.path.join(work, "scrapes")) as f:
                times = [float(line) for line in f if start <= float(line) <= end]
        except FileNotFoundError:
            times = []
        result["scrape"]["scrapes"] = len(times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        result["scrape"]["scrape_min_gap_s"] = round(min(gaps), 2) if gaps else None
        if args.json:
            print(json.dumps(result))
        else:
            for name, r in result.items():
                print(f"{name:6}: VmRSS {r['rss_kib'] / 1024:.1f} MiB (peak {r['hwm_kib'] / 1024:.1f}), "
                      f"{r['threads']} threads, {r['wakeups']} wake-ups ({r['switches']} switches) "
                      f"in {args.seconds:.0f} s, shortest gap {r['min_gap_s']} s")
            r = result["scrape"]
            print(f"scrapes: {r['scrapes']} in {args.seconds:.0f} s, shortest gap {r['scrape_min_gap_s']} s")
    finally:
        stop(*gates.values(), emulator)


if __name__ == "__main__":
    sys.exit(main())
