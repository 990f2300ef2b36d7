#!/usr/bin/env bash
# Installs and starts the emulators the tests and the demo use, on 127.0.0.1.
# Source it, then call: emulators_install; moto_start; ...; emulators_stop
# (moto_start registers emulators_stop on EXIT).
#
# Everything installs from the package registries into a cache outside the
# clone ($JAAM_CACHE, default ~/.cache/jaam), so a fresh machine works and a
# warm one does not reinstall.

JAAM_CACHE="${JAAM_CACHE:-$HOME/.cache/jaam}"
EMU_VENV="$JAAM_CACHE/venv-emu"
EMU_PIDS=()

emulators_install() {
  mkdir -p "$JAAM_CACHE"
  if [ ! -x "$EMU_VENV/bin/moto_server" ]; then
    echo "==> installing moto[server] into $EMU_VENV" >&2
    python3 -m venv "$EMU_VENV"
    "$EMU_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (with backoff, under a deadline) until URL answers; python3 only, no curl needed.
wait_for_url() {
  python3 - "$1" "${2:-60}" <<'PY'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
delay = 0.05
while True:
    try:
        urllib.request.urlopen(url, timeout=2).read()
        sys.exit(0)
    except Exception:
        if time.monotonic() + delay > deadline:
            sys.exit(f"error: {url} did not answer in time")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
PY
}

moto_start() {
  local port
  port=$(free_port)
  "$EMU_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$JAAM_CACHE/moto-$port.log" 2>&1 &
  EMU_PIDS+=("$!")
  trap emulators_stop EXIT
  wait_for_url "http://127.0.0.1:$port/moto-api/" 60
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
  export AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN
  echo "==> moto listening on $AWS_ENDPOINT_URL (pid ${EMU_PIDS[-1]})" >&2
}

emulators_stop() {
  local pid
  for pid in "${EMU_PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  EMU_PIDS=()
}
