#!/usr/bin/env python3
"""Push throughput of the metering agent with durable acknowledgement, against the disk's floor.

Starts the emulator and an mpgate usage sidecar (its ledger in LEDGER_DIR, default under
target/), then measures, in alternating slices so that a disk whose speed drifts (a shared
VM's) weighs on all three alike:

  floor      a loop of write(64 bytes) + fdatasync on a file in the ledger's directory (its
             block written and synced first, so each sync is an overwrite, as the ledger's
             are): the physical limit of one synced write at a time on that filesystem;
  1 client   POST /v1/usage one after another on one keep-alive connection to the agent's
             Unix socket, each answered 200 once the increment is synced;
  16 clients 16 threads doing the same at once (increments that arrive together share one
             commit and one sync);
  echo       the same request on a Unix socket to a forked copy of this script that answers
             200 at once: the round trip alone (two processes woken), no agent and no disk. One
             client can at best reach floor x echo / (floor + echo): its bound, printed too.

The client writes a prepared request and reads the answer's status and length, so the
numbers are the agent's and the disk's, not an HTTP library's. Standard library only.
Usage: python3 bench/usage_push.py [--bin-dir target/debug | --mpgate BIN --emulator BIN]
[--ledger-dir DIR] [--seconds 3] [--rounds 3] [--json]. Every child is bounded and stopped
at the end; any refused push fails the run.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

BODY = json.dumps({"dimension": "nodes", "quantity": 1}).encode()
REQUEST = (
    b"POST /v1/usage HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Client:
    """One keep-alive connection to the push API."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buffer = b""

    def push(self):
        self.sock.sendall(REQUEST)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("the agent closed the connection")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("the agent closed the connection")
            rest += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"push answered {head.splitlines()[0]!r}: {rest[:length]!r}")
        self.buffer = rest[length:]

    def close(self):
        self.sock.close()


def clients(path, seconds, number):
    """Pushes acknowledged by `number` clients at once in `seconds`."""
    conns = [Client(path) for _ in range(number)]
    counts = [0] * number
    errors = []
    start = threading.Barrier(number + 1)

    def loop(i):
        try:
            start.wait()
            end = time.monotonic() + seconds
            n = 0
            while time.monotonic() < end:
                conns[i].push()
                n += 1
            counts[i] = n
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(number)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(seconds + 30)
    for c in conns:
        c.close()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return sum(counts)


def floor(directory, seconds):
    """Synced 64-byte writes, one at a time, in `seconds`: each overwrites a block already
    written and synced, as the ledger's commits overwrite the pages of its file."""
    path = os.path.join(directory, "floor.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.pwrite(fd, b"\0" * 4096, 0)
    os.fsync(fd)
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
    return n


def echo(directory, seconds):
    """Round trips of the push's request to a child that answers 200 at once, in `seconds`."""
    path = os.path.join(directory, "echo.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    pid = os.fork()
    if pid == 0:  # the child: answers each request as it comes, until the client closes
        try:
            conn, _ = server.accept()
            while conn.recv(4096):
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        finally:
            os._exit(0)
    server.close()
    client = Client(path)
    n = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.push()
            n += 1
    finally:
        client.close()
        os.waitpid(pid, 0)
        os.unlink(path)
    return n


def stop(*children):
    """Ends every child still running: SIGTERM, then SIGKILL after 30 s (bench/usage_idle.py too)."""
    for child in children:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default="target/debug")
    parser.add_argument("--mpgate", help="the mpgate binary (default: BIN_DIR/mpgate)")
    parser.add_argument("--emulator", help="the emulator (default: BIN_DIR/mpgate-emulator)")
    parser.add_argument("--ledger-dir", default="target/bench-ledger")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measure, in all")
    parser.add_argument("--rounds", type=int, default=3, help="slices of each measure")
    parser.add_argument("--json", action="store_true", help="one JSON line of the rates")
    args = parser.parse_args()
    mpgate = args.mpgate or os.path.join(args.bin_dir, "mpgate")
    emulator_bin = args.emulator or os.path.join(args.bin_dir, "mpgate-emulator")
    ledger = os.path.abspath(args.ledger_dir)
    subprocess.run(["rm", "-rf", ledger], check=True)
    os.makedirs(ledger)
    emulator = subprocess.Popen(
        [emulator_bin, "serve", "--dimension", "nodes",
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
        gate = subprocess.Popen([mpgate], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sock = os.path.join(ledger, "usage.sock")
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline or gate.poll() is not None:
                raise SystemExit("the agent's socket never appeared")
            time.sleep(0.02)
        # A first push opens the ledger's pages, as any agent that has run a while has.
        clients(sock, 0.2, 1)
        slice_ = args.seconds / args.rounds
        totals = {"floor": 0, "one": 0, "sixteen": 0, "echo": 0}
        for _ in range(args.rounds):
            totals["floor"] += floor(ledger, slice_)
            totals["echo"] += echo(ledger, slice_)
            totals["one"] += clients(sock, slice_, 1)
            totals["sixteen"] += clients(sock, slice_, 16)
        rates = {k: v / args.seconds for k, v in totals.items()}
        fl, one, many = rates["floor"], rates["one"], rates["sixteen"]
        if args.json:
            print(json.dumps(rates))
        else:
            print(f"floor (write + fdatasync, 64 B):  {fl:10.0f} /s")
            print(f"1 client, durable push:           {one:10.0f} /s  ({one / fl:.2f} of the floor)")
            print(f"16 clients, durable push:         {many:10.0f} /s  ({many / fl:.2f} of the floor)")
            ec = rates["echo"]
            bound = fl * ec / (fl + ec)
            print(f"echo (round trip, no agent):      {ec:10.0f} /s  "
                  f"(1 client's bound: {bound / fl:.2f} of the floor)")
    finally:
        stop(gate, emulator)


if __name__ == "__main__":
    sys.exit(main())
