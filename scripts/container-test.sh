#!/usr/bin/env bash
# The gate in a real container engine: builds the shipped Dockerfile's runtime stage from the
# locally built static binary (no registry, no rust image), the example seller image's
# targets on a busybox imported from Debian's busybox-static, then runs
# tests/container/test_image.py against the emulator on the host (--network host).
#
#   bash scripts/container-test.sh            # as root: starts a private Docker daemon
#   DOCKER_HOST=unix:///run/docker.sock bash scripts/container-test.sh   # use a running one
#
# The private daemon (Debian's docker.io) keeps everything under target/docker: its own
# socket, data root and exec root, and it never touches the host's firewall or forwarding
# (--bridge=none --iptables=false --ip-masq=false --ip-forward=false); it is stopped by its
# PID on exit. Needs: docker.io, busybox-static, musl-tools (Debian), the
# x86_64-unknown-linux-musl rustup target. About a minute once the binaries are built.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-target}
musl_bin="$target_dir/x86_64-unknown-linux-musl/release/mpgate"
docker=/usr/bin/docker   # Debian's client: BuildKit built in (a newer client needs buildx)
step() { echo "== $*"; }

for tool in "$docker" /bin/busybox; do
  if [ ! -x "$tool" ]; then
    echo "scripts/container-test.sh: $tool is missing (Debian: apt-get install docker.io busybox-static)" >&2
    exit 1
  fi
done

step "building the static gate and the emulator"
cargo build --locked --quiet --release --target x86_64-unknown-linux-musl --bin mpgate
# The emulator as scripts/demo.sh builds it (the test suite's dependency features): fresh
# after it or scripts/test.sh.
cargo build --locked --quiet --workspace --bins --examples

daemon_pid=""
work=$(mktemp -d)
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    # dockerd stops its containers first; bounded, then forced.
    for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$daemon_pid" 2>/dev/null || true
    # dockerd leaves its network namespace bind-mounted in its exec root: unmounted, so that
    # the directory (a CI clone's target/) can be removed.
    for ns in "$dir"/exec/netns/*; do
      if mountpoint -q "$ns"; then umount "$ns" || true; fi
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${DOCKER_HOST:-}" ]; then
  dir="$root/$target_dir/docker"
  mkdir -p "$dir"
  rm -f "$dir/docker.sock"
  step "starting a private Docker daemon ($dir)"
  setsid dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" --bridge=none --iptables=false --ip-masq=false \
    --ip-forward=false --userland-proxy=false >"$dir/dockerd.log" 2>&1 </dev/null &
  daemon_pid=$!
  export DOCKER_HOST="unix://$dir/docker.sock"
  for _ in $(seq 1 300); do
    "$docker" version >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$dir/dockerd.log" >&2; exit 1; }
    sleep 0.1
  done
  "$docker" version >/dev/null || { echo "the Docker daemon did not answer within 30 s" >&2; exit 1; }
fi
export DOCKER_BUILDKIT=1

step "image mpgate:test from the Dockerfile's runtime stage (MPGATE_BINARY=prebuilt)"
install -D -m 0755 "$musl_bin" "$target_dir/image/amd64/mpgate"
"$docker" build --quiet --build-arg MPGATE_BINARY=prebuilt -t mpgate:test . >/dev/null

step "image mpgate-test/busybox:1 (Debian's busybox-static, imported)"
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh sleep cat echo env id kill wget httpd true false; do
  ln -s busybox "$work/rootfs/bin/$applet"
done
tar -C "$work/rootfs" -c . | "$docker" import - mpgate-test/busybox:1 >/dev/null

python3 tests/container/test_image.py --build-seller-images "$@"
