"""The gate in a real container engine (run by scripts/container-test.sh).

Images: mpgate:test (the Dockerfile's runtime stage: /mpgate only, user 65532, ENTRYPOINT
["/mpgate"]) and the example seller image's targets built on it (busybox for a shell). The
emulator runs on the host; containers reach it with --network host. Every docker command is
bounded by a timeout; waits poll for an event with a deadline, never a fixed sleep.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
EMULATOR = TARGET / "debug" / "mpgate-emulator"
DOCKER = "/usr/bin/docker"
IMAGE = "mpgate:test"
SELLER = "mpgate-test/seller:keyring"
SELLER_CONTRACT = "mpgate-test/seller:contract"
SELLER_USAGE = "mpgate-test/seller:usage"
BUSYBOX = "mpgate-test/busybox:1"
PRODUCT_CODE = "prod-container1test"
# Temporary credentials (a session token): what a task role or IRSA hands out.
ACCESS_KEY = "ASIACONTAINERTEST01"
SECRET_KEY = "containerTestSecretKey0123456789abcdefgh"
SESSION_TOKEN = "containerTestSessionToken"
KEYS = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-container-keys-"))


def docker(*args, timeout=60, check=False, **kw):
    """Runs the docker client; returns the CompletedProcess (text)."""
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          check=check, **kw)


def wait_for(what, predicate, deadline_s=30.0):
    """Polls predicate() until it is truthy or the deadline passes (then fails)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


class Emulator:
    """mpgate-emulator serve on 127.0.0.1 with the shared key ring and a record file."""

    def __init__(self, *args):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-container-emu-"))
        self.record = self.dir / "record.jsonl"
        self.proc = subprocess.Popen(
            [str(EMULATOR), "serve", "--key-dir", str(KEYS), "--product-code", PRODUCT_CODE,
             "--credentials", f"{ACCESS_KEY}:{SECRET_KEY}:{SESSION_TOKEN}",
             "--record", str(self.record), *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the emulator did not start: {args}")
        self.ready = json.loads(line)
        self.url = self.ready["url"]

    def calls(self, target_suffix=""):
        if not self.record.exists():
            return []
        lines = [json.loads(x) for x in self.record.read_text().splitlines() if x.strip()]
        return [r for r in lines if (r.get("target") or "").endswith(target_suffix)]

    def env(self, keys=True):
        """The docker -e arguments that point the gate at this emulator (with the task's
        temporary keys unless keys=False)."""
        pairs = {
            "AWS_ENDPOINT_URL_MARKETPLACE_METERING": self.url,
            "AWS_ENDPOINT_URL_LICENSE_MANAGER": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_REGION": self.ready["region"],
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if keys:
            pairs.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                          "AWS_SESSION_TOKEN": SESSION_TOKEN})
        out = []
        for k, v in pairs.items():
            out += ["-e", f"{k}={v}"]
        return out

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def key_mount():
    """The bare image's key: the emulator's public key, read-only."""
    return ["-v", f"{KEYS / 'public-key-v1.pem'}:/etc/mpgate/key.pem:ro",
            "-e", "MPGATE_PUBLIC_KEY_FILE=/etc/mpgate/key.pem", "-e", "MPGATE_PUBLIC_KEY_VERSION=1",
            "-e", f"MPGATE_PRODUCT_CODE={PRODUCT_CODE}"]


def termination_log():
    """A host file bind-mounted as /dev/termination-log, writable by the image's user."""
    fd, path = tempfile.mkstemp(prefix="mpgate-termination-")
    os.close(fd)
    os.chmod(path, 0o666)
    return pathlib.Path(path)


def inspect_exit(name):
    out = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name, check=True).stdout
    status, code = out.split()
    return status, int(code)


class ContainerTest(unittest.TestCase):
    def setUp(self):
        self.emulators = []
        self.containers = []
        self.files = []

    def tearDown(self):
        for c in self.containers:
            docker("rm", "-f", "-v", c)
        for e in self.emulators:
            e.close()
        for f in self.files:
            f.unlink(missing_ok=True)

    def emulator(self, *args):
        e = Emulator(*args)
        self.emulators.append(e)
        return e

    def name(self, label):
        n = f"mpgate-test-{label}-{os.getpid()}"
        self.containers.append(n)
        return n

    def run_container(self, label, *args, timeout=60):
        return docker("run", "--name", self.name(label), *args, timeout=timeout)

    # --- entrypoint mode -------------------------------------------------------------------

    def test_entrypoint_mode_workload_is_pid_1_with_its_exit_code_and_verified_variables(self):
        emu = self.emulator()
        r = self.run_container(
            "entrypoint", "--network", "host", *emu.env(), SELLER, "sh", "-c",
            'echo "pid=$$ entitlement=$MPGATE_ENTITLEMENT signature=${MPGATE_SIGNATURE:+set}"; '
            "/mpgate verify || exit 99; exit 7")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("pid=1 entitlement=verified signature=set", r.stdout)
        self.assertIn("the hand-over is verified", r.stdout + r.stderr)
        self.assertEqual(len(emu.calls("RegisterUsage")), 1)

    def test_a_restarted_entrypoint_container_checks_again(self):
        emu = self.emulator()
        name = self.name("restart")
        r = docker("run", "--name", name, "--network", "host", *emu.env(),
                   "-e", "MPGATE_MAX_TOKEN_AGE=3s", SELLER, "sh", "-c",
                   '/mpgate verify >/dev/null 2>&1 && echo checked')
        self.assertEqual(r.returncode, 0, r.stderr)
        first = emu.calls("RegisterUsage")[0]["receivedAtMs"]
        # The first token is now older than the 3 s age: a restart must check again, not
        # reuse the first container's hand-over.
        wait_for("the first token to age", lambda: time.time() * 1000 - first > 4500, 15)
        r = docker("start", "-a", name, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("checked", r.stdout)
        self.assertEqual(len(emu.calls("RegisterUsage")), 2)

    def test_locked_down_container_read_only_non_root_no_capabilities(self):
        emu = self.emulator()
        r = self.run_container(
            "locked", "--network", "host", "--read-only", "--user", "65532:65532",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *emu.env(), SELLER,
            "sh", "-c", 'echo "uid=$(id -u) entitlement=$MPGATE_ENTITLEMENT"')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("uid=65532 entitlement=verified", r.stdout)

    def test_ecs_container_credentials_from_the_emulator(self):
        token = "container-test-token-0123456789"
        emu = self.emulator("--container-credentials-token", token)
        token_file = pathlib.Path(tempfile.mkstemp(prefix="mpgate-ecs-token-")[1])
        self.files.append(token_file)
        token_file.write_text(token)
        os.chmod(token_file, 0o644)
        # No keys in the environment: the SDK's container provider fetches them with the token.
        r = self.run_container(
            "ecs-credentials", "--network", "host", *emu.env(keys=False), *key_mount(),
            "-e", f"AWS_CONTAINER_CREDENTIALS_FULL_URI={emu.ready['containerCredentialsUri']}",
            "-e", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/run/ecs/token",
            "-v", f"{token_file}:/var/run/ecs/token:ro", IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        fetched = emu.calls("ContainerCredentials")
        self.assertEqual(len(fetched), 1, "the credentials came from somewhere else")
        calls = emu.calls("RegisterUsage")
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0]["status"], 200)
        self.assertNotIn(ACCESS_KEY, calls[0]["credentialScope"])

    # --- refusals ----------------------------------------------------------------------------

    def test_not_entitled_exits_10_with_the_reason_in_the_termination_log(self):
        emu = self.emulator("--fault", "not-entitled")
        log = termination_log()
        self.files.append(log)
        r = self.run_container(
            "not-entitled", "--network", "host", *emu.env(), *key_mount(),
            "-v", f"{log}:/dev/termination-log", IMAGE)
        self.assertEqual(r.returncode, 10, r.stderr)
        reason = log.read_text()
        self.assertIn("not entitled", reason)
        self.assertIn("subscribe", reason)

    def test_no_network_exits_14(self):
        emu = self.emulator()
        r = self.run_container(
            "no-network", "--network", "none", *emu.env(), *key_mount(),
            "-e", "MPGATE_TIMEOUT=5s", IMAGE)
        self.assertEqual(r.returncode, 14, r.stderr)
        self.assertIn("service-unreachable", r.stderr)

    # --- docker stop -------------------------------------------------------------------------

    def test_docker_stop_during_the_check_exits_143_at_once(self):
        emu = self.emulator("--latency", "120s")
        name = self.name("stop-check")
        docker("run", "-d", "--name", name, "--network", "host", *emu.env(), *key_mount(),
               "-e", "MPGATE_TIMEOUT=100s", IMAGE, check=True)
        wait_for("the RegisterUsage call", lambda: emu.calls("RegisterUsage"))
        started = time.monotonic()
        docker("stop", "-t", "30", name, check=True, timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual(inspect_exit(name), ("exited", 143))
        self.assertLess(elapsed, 10, "docker stop waited for its timeout: SIGTERM was not handled")
        self.assertIn("SIGTERM", docker("logs", name).stderr)

    def test_docker_stop_during_hold_forwards_sigterm_and_checks_the_seat_in(self):
        emu = self.emulator()
        name = self.name("stop-hold")
        docker("run", "-d", "--name", name, "--network", "host", "--stop-timeout", "40",
               *emu.env(), "-e", "MPGATE_PRODUCT_SKU=" + emu.ready["productSku"],
               "-e", "MPGATE_ENTITLEMENTS=Seats=1", SELLER_CONTRACT, "sh", "-c",
               'trap "echo workload: got SIGTERM; exit 143" TERM; echo workload: up; '
               "while :; do sleep 1; done", check=True)
        wait_for("the workload to start", lambda: "workload: up" in docker("logs", name).stdout)
        self.assertEqual(len(emu.calls("CheckoutLicense")), 1)
        started = time.monotonic()
        docker("stop", name, check=True, timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual(inspect_exit(name), ("exited", 143))
        self.assertLess(elapsed, 10, "docker stop waited for its timeout")
        self.assertIn("workload: got SIGTERM", docker("logs", name).stdout)
        self.assertEqual(len(emu.calls("CheckInLicense")), 1, "the seat was not checked in")

    def test_docker_stop_flushes_the_partial_hour_of_usage_from_the_ledger_volume(self):
        usage_file = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-container-usage-")) / "usage.jsonl"
        self.addCleanup(shutil.rmtree, usage_file.parent, True)
        # AWS's hour: no hour closes during the test, so only the stop sends the usage.
        emu = self.emulator("--dimension", "nodes", "--dimension", "gb",
                            "--usage-file", str(usage_file))
        volume = f"mpgate-test-ledger-{os.getpid()}"
        self.addCleanup(docker, "volume", "rm", "-f", volume)
        name = self.name("stop-usage")
        # The seller's usage image: the ledger on a volume (the image's /var/lib/mpgate, owned
        # by its user), the workload reporting through `mpgate usage add` (the socket in it).
        # The start locks nodes' hour with its record of 0, so gb is the dimension flushed.
        docker("run", "-d", "--name", name, "--network", "host", "--stop-timeout", "40",
               "-v", f"{volume}:/var/lib/mpgate", *emu.env(), SELLER_USAGE, "sh", "-c",
               'trap "echo workload: got SIGTERM; exit 42" TERM; '
               "/mpgate usage add gb 5 >/dev/null && /mpgate usage add gb 2 >/dev/null "
               "&& echo workload: up || exit 9; while :; do sleep 1; done", check=True)
        wait_for("the workload's usage", lambda: "workload: up" in docker("logs", name).stdout)
        calls = emu.calls("MeterUsage")
        self.assertEqual(len(calls), 1, "only the start's call before the stop")
        hour_ms = 3600_000
        start_hour = calls[0]["receivedAtMs"] // hour_ms * hour_ms
        self.assertFalse(usage_file.exists() and any(
            json.loads(x)["dimension"] == "gb" for x in usage_file.read_text().splitlines()))
        started, stop_ms = time.monotonic(), time.time() * 1000
        docker("stop", name, check=True, timeout=60)
        elapsed = time.monotonic() - started
        # The workload's own status, after mpgate forwarded SIGTERM and flushed.
        self.assertEqual(inspect_exit(name), ("exited", 42))
        self.assertLess(elapsed, 10, "docker stop waited for its timeout")
        self.assertIn("workload: got SIGTERM", docker("logs", name).stdout)
        billed = [json.loads(x) for x in usage_file.read_text().splitlines()]
        gb = [r for r in billed if r["dimension"] == "gb"]
        self.assertEqual(len(gb), 1, billed)
        self.assertEqual(gb[0]["quantity"], 7, billed)
        # The partial hour, still open at the stop (unless the clock hour turned meanwhile).
        if stop_ms // hour_ms * hour_ms == start_hour:
            self.assertEqual(gb[0]["hourStartMs"], start_hour, gb)

    # --- contract pricing outside AWS: the buyer's license token ------------------------------

    def license_secret(self, emu):
        """The buyer's Secret as a directory (license_token and iam_role), readable by the
        image's user as a pod's fsGroup makes a Secret volume, for a read-only mount."""
        secret = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-license-secret-"))
        self.addCleanup(shutil.rmtree, secret, True)
        source = pathlib.Path(emu.ready["licenseTokenFile"])
        for name in ("license_token", "iam_role"):
            shutil.copy(source.parent / name, secret / name)
            os.chmod(secret / name, 0o444)
        os.chmod(secret, 0o755)
        return secret, (secret / "license_token").read_text()

    def test_license_token_from_a_read_only_secret_volume_checks_out_and_renews_in_hold(self):
        token_dir = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-license-token-"))
        self.addCleanup(shutil.rmtree, token_dir, True)
        emu = self.emulator("--license-token-file", str(token_dir / "license_token"),
                            "--license-entitlement", "Seats=1", "--consumption-ttl", "4s",
                            "--role-credentials-ttl", "3s")
        secret, token = self.license_secret(emu)
        anywhere = ["--network", "host", *emu.env(keys=False),
                    "-v", f"{secret}:/var/run/secrets/product-license:ro",
                    "-e", "MPGATE_LICENSE_TOKEN_FILE=/var/run/secrets/product-license/license_token",
                    "-e", "MPGATE_PRICING=contract", "-e", "MPGATE_PRODUCT_SKU=" + emu.ready["productSku"],
                    "-e", "MPGATE_ENTITLEMENTS=Seats=1"]
        # Init mode in the bare image, locked down: the token's role checks out and back in.
        r = self.run_container("anywhere-init", "--read-only", "--cap-drop", "ALL",
                               "--security-opt", "no-new-privileges", *anywhere, IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("credentials: license token (MPGATE_LICENSE_TOKEN_FILE", r.stderr)
        exchange = emu.calls("GetAccessToken")
        self.assertEqual(len(exchange), 1)
        self.assertIsNone(exchange[0]["credentialScope"], "GetAccessToken is sent unsigned")
        issued = [c["issuedAccessKeyId"] for c in emu.calls("AssumeRoleWithWebIdentity")]
        checkout = emu.calls("CheckoutLicense")
        self.assertEqual(len(checkout), 1)
        self.assertTrue(checkout[0]["credentialScope"].startswith(issued[0]), checkout[0])
        self.assertEqual(len(emu.calls("CheckInLicense")), 1)
        self.assertNotIn(token.strip(), r.stdout + r.stderr)
        self.assertNotIn("eyJ", r.stderr)

        # Seat hold in the seller's contract image: the role's 3-second credentials are
        # renewed across several extensions; the workload never sees the token's value.
        name = self.name("anywhere-hold")
        docker("run", "-d", "--name", name, "--stop-timeout", "40", *anywhere, SELLER_CONTRACT,
               "sh", "-c", 'trap "exit 143" TERM; env; echo workload: up; while :; do sleep 1; done',
               check=True)
        wait_for("the workload to start", lambda: "workload: up" in docker("logs", name).stdout)
        wait_for("three renewals of the role's credentials",
                 lambda: len(emu.calls("AssumeRoleWithWebIdentity")) >= 4, 30)
        docker("stop", name, check=True, timeout=60)
        self.assertEqual(inspect_exit(name), ("exited", 143))
        logs = docker("logs", name)
        self.assertNotIn(token.strip(), logs.stdout + logs.stderr)
        self.assertNotIn("eyJ", logs.stderr)
        extended = emu.calls("ExtendLicenseConsumption")
        self.assertGreaterEqual(len(extended), 2)
        self.assertTrue(all(c["status"] == 200 for c in extended), extended)
        self.assertEqual(len(emu.calls("CheckInLicense")), 2, "the held seat was not checked in")

    # --- the initContainer pattern -----------------------------------------------------------

    def test_init_container_pattern_with_a_restart_after_the_token_age(self):
        emu = self.emulator()
        volume = f"mpgate-test-result-{os.getpid()}"
        docker("volume", "create", volume, check=True)
        self.addCleanup(docker, "volume", "rm", "-f", volume)
        # The volume belongs to root; the gate runs as 65532 (a pod's fsGroup does this).
        docker("run", "--rm", "-v", f"{volume}:/run/mpgate", "--user", "0", "--entrypoint",
               "/bin/sh", BUSYBOX, "-c", "chmod 0777 /run/mpgate", check=True)
        r = self.run_container(
            "init", "--network", "host", *emu.env(), *key_mount(),
            "-e", "MPGATE_RESULT_FILE=/run/mpgate/result.json", "-v", f"{volume}:/run/mpgate", IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        app = self.name("app")
        verify = ["--network", "host", *emu.env(), "-e", "MPGATE_MAX_TOKEN_AGE=3s",
                  "-v", f"{volume}:/run/mpgate:ro", "--entrypoint", "/mpgate", SELLER,
                  "verify", "--result-file", "/run/mpgate/result.json", "--renew"]
        r = docker("run", "--name", app, *verify)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(emu.calls("RegisterUsage")), 1, "a fresh result file needs no call")
        first = emu.calls("RegisterUsage")[0]["receivedAtMs"]
        wait_for("the token to age", lambda: time.time() * 1000 - first > 4500, 15)
        # The app container restarts after the token's age (OOM, liveness): no crash loop.
        r = docker("start", "-a", app, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(emu.calls("RegisterUsage")), 2, "--renew checks again")
        # Without --renew, a stale hand-over is refused (exit 12) and says what to do.
        r = self.run_container("stale", *verify[:-1])
        self.assertEqual(r.returncode, 12, r.stderr)
        self.assertIn("--renew", r.stderr)


def build_seller_images():
    """The example seller Dockerfile's targets, on the local images, with the test key."""
    ctx = pathlib.Path(tempfile.mkdtemp(prefix="mpgate-seller-ctx-"))
    try:
        src = ROOT / "deploy" / "examples" / "seller-image"
        shutil.copytree(src / "www", ctx / "www")
        (ctx / "marketplace-keys").mkdir()
        shutil.copy(KEYS / "public-key-v1.pem", ctx / "marketplace-keys" / "public-key-v1.pem")
        common = ["--build-arg", "MPGATE_REPOSITORY=mpgate", "--build-arg", "MPGATE_TAG=test",
                  "--build-arg", f"BASE_IMAGE={BUSYBOX}", "-f", str(src / "Dockerfile")]
        for target, tag, extra in [
            ("keyring", SELLER, ["--build-arg", f"MPGATE_PRODUCT_CODE={PRODUCT_CODE}"]),
            ("contract", SELLER_CONTRACT, []),
            ("usage", SELLER_USAGE, ["--build-arg", f"MPGATE_PRODUCT_CODE={PRODUCT_CODE}",
                                     "--build-arg", "MPGATE_DIMENSIONS=nodes,gb"]),
        ]:
            r = docker("build", "--quiet", "--network", "none", "--target", target, "-t", tag, *common, *extra,
                       str(ctx), timeout=300)
            if r.returncode != 0:
                sys.exit(f"building the seller image's {target} target failed:\n{r.stderr}")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def main():
    # One emulator start writes the key ring every test's emulator then reuses.
    Emulator().close()
    if "--build-seller-images" in sys.argv:
        sys.argv.remove("--build-seller-images")
        build_seller_images()
    try:
        unittest.main(verbosity=2)
    finally:
        shutil.rmtree(KEYS, ignore_errors=True)


if __name__ == "__main__":
    main()
