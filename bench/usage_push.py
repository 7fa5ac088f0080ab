#!/usr/bin/env python3
"""Push throughput of the metering agent with durable acknowledgement, against the disk's floor.

Starts the emulator and an mpgate usage sidecar (its ledger in LEDGER_DIR, default under
target/), then measures, each for --seconds:

  floor      a loop of write(64 bytes) + fdatasync on a file in the ledger's directory: the
             physical limit of one synced write at a time on that filesystem;
  1 client   POST /v1/usage one after another over the agent's Unix socket;
  16 clients 16 threads doing the same at once (their increments share syncs).

Standard library only. Usage: python3 bench/usage_push.py [--bin-dir target/debug]
[--ledger-dir DIR] [--seconds 3]. Every child is bounded and stopped at the end.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def push_loop(path, seconds, counts, index):
    conn = UnixConnection(path)
    body = json.dumps({"dimension": "nodes", "quantity": 1})
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        conn.request("POST", "/v1/usage", body, {"content-type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"push answered {answer.status}")
        n += 1
    counts[index] = n
    conn.close()


def clients(path, seconds, number):
    counts = [0] * number
    threads = [
        threading.Thread(target=push_loop, args=(path, seconds, counts, i)) for i in range(number)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(counts) / seconds


def floor(directory, seconds):
    path = os.path.join(directory, "floor.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    data = b"x" * 64
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            os.pwrite(fd, data, 0)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default="target/debug")
    parser.add_argument("--ledger-dir", default="target/bench-ledger")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    ledger = os.path.abspath(args.ledger_dir)
    subprocess.run(["rm", "-rf", ledger], check=True)
    os.makedirs(ledger)
    emulator = subprocess.Popen(
        [os.path.join(args.bin_dir, "mpgate-emulator"), "serve", "--dimension", "nodes",
         "--credentials", "ASIABENCHMARKKEY0001:benchSecret:benchToken"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    gate = None
    try:
        ready = json.loads(emulator.stdout.readline())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_ACCESS_KEY_ID": "ASIABENCHMARKKEY0001", "AWS_SECRET_ACCESS_KEY": "benchSecret",
            "AWS_SESSION_TOKEN": "benchToken", "AWS_REGION": ready["region"],
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_MARKETPLACE_METERING": ready["url"],
            "MPGATE_PRICING": "usage", "MPGATE_PRODUCT_CODE": ready["productCode"],
            "MPGATE_DIMENSIONS": "nodes", "MPGATE_LEDGER_DIR": ledger,
            "MPGATE_LOG": "warn",
        }
        gate = subprocess.Popen([os.path.join(args.bin_dir, "mpgate")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sock = os.path.join(ledger, "usage.sock")
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline or gate.poll() is not None:
                raise SystemExit("the agent's socket never appeared")
            time.sleep(0.02)
        fl = floor(ledger, args.seconds)
        one = clients(sock, args.seconds, 1)
        many = clients(sock, args.seconds, 16)
        print(f"floor (write + fdatasync, 64 B):  {fl:10.0f} /s")
        print(f"1 client, durable push:           {one:10.0f} /s  ({one / fl:.2f} of the floor)")
        print(f"16 clients, durable push:         {many:10.0f} /s  ({many / fl:.2f} of the floor)")
    finally:
        for child in (gate, emulator):
            if child is not None and child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


if __name__ == "__main__":
    sys.exit(main())
