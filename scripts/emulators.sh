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

EMU_NODE="$JAAM_CACHE/node"
EMU_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

emulators_install() {
  mkdir -p "$JAAM_CACHE"
  if [ ! -x "$EMU_VENV/bin/moto_server" ]; then
    echo "==> installing moto[server] into $EMU_VENV" >&2
    python3 -m venv "$EMU_VENV"
    "$EMU_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
  fi
  # The AWS CLI the instance boxes' scripts call (Amazon Linux has it built in).
  if [ ! -x "$EMU_VENV/bin/aws" ]; then
    echo "==> installing awscli into $EMU_VENV" >&2
    "$EMU_VENV/bin/pip" install --quiet --disable-pip-version-check 'awscli>=1.29,<2'
  fi
  # From Debian: Pebble (ACME CA + its DNS test server), nginx (the deploy
  # script is run for real behind it) and shellcheck (lints generated scripts).
  local missing=()
  command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v git >/dev/null || missing+=(git)
  command -v curl >/dev/null || missing+=(curl)
  # The instance boxes (tests/boxes.rs): network namespaces and veth pairs,
  # nsenter/unshare, and the node the sample apps build with.
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  # Previews keep their user from the metadata service with nftables.
  command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
  command -v node >/dev/null || missing+=(nodejs)
  # The dashboard's browser tests: Debian's Chromium and its WebDriver.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]} from Debian" >&2
    apt-get update -qq
    # Debian would start nginx on port 80 after installing it: not wanted here.
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; fi
  fi
  # GitHub's schema-validating simulator, webhook payloads and signer from npm.
  mkdir -p "$EMU_NODE"
  cp "$EMU_SCRIPTS/../tests/node/package.json" "$EMU_SCRIPTS/../tests/node/"*.mjs "$EMU_NODE/"
  if ! cmp -s "$EMU_NODE/package.json" "$EMU_NODE/.installed" 2>/dev/null; then
    echo "==> installing the GitHub test servers from npm into $EMU_NODE" >&2
    (cd "$EMU_NODE" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$EMU_NODE/package.json" "$EMU_NODE/.installed"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (with backoff, under a deadline) until TARGET answers: a URL is
# fetched, a bare port on 127.0.0.1 is connected to. python3 only.
wait_for() {
  python3 - "$1" "${2:-60}" <<'PY'
import socket, sys, time, urllib.request
target, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
delay = 0.05
while True:
    try:
        if target.isdigit():
            socket.create_connection(("127.0.0.1", int(target)), timeout=2).close()
        else:
            urllib.request.urlopen(target, timeout=2).read()
        sys.exit(0)
    except Exception:
        if time.monotonic() + delay > deadline:
            sys.exit(f"error: {target} did not answer in time")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
PY
}

moto_start() {
  local port
  port=$(free_port)
  # AWS's managed IAM policies (AmazonSSMManagedInstanceCore, …) exist, as in
  # a real account: instance profiles attach them.
  MOTO_IAM_LOAD_MANAGED_POLICIES=true \
    "$EMU_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$JAAM_CACHE/moto-$port.log" 2>&1 &
  EMU_PIDS+=("$!")
  trap emulators_stop EXIT
  wait_for "http://127.0.0.1:$port/moto-api/" 60
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
  export AWS_EC2_METADATA_DISABLED=true
  # The AWS CLI the instance boxes run (tests/boxes.rs).
  export JAAM_TEST_AWS_CLI="$EMU_VENV/bin/aws"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  echo "==> moto listening on $AWS_ENDPOINT_URL (pid ${EMU_PIDS[-1]})" >&2
}

# Pebble with pebble-challtestsrv as its DNS: DNS-01 is really checked (no
# PEBBLE_VA_ALWAYS_VALID). A throwaway CA signs Pebble's HTTPS certificate;
# jaam trusts it through JAAM_ACME_ROOT_CA. Certificates live
# JAAM_PEBBLE_VALIDITY seconds (default 40) so renewal is testable.
pebble_start() {
  local dir acme mgmt dns dns_mgmt
  dir=$(mktemp -d "${TMPDIR:-/tmp}/jaam-pebble.XXXXXX")
  acme=$(free_port); mgmt=$(free_port); dns=$(free_port); dns_mgmt=$(free_port)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=jaam test ACME TLS root" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/ext"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext" -out "$dir/tls.pem" 2>/dev/null
  cat >"$dir/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme", "managementListenAddress": "127.0.0.1:$mgmt",
  "certificate": "$dir/tls.pem", "privateKey": "$dir/tls.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
  "externalAccountBindingRequired": false,
  "certificateValidityPeriod": ${JAAM_PEBBLE_VALIDITY:-40}}}
JSON
  pebble-challtestsrv -management "127.0.0.1:$dns_mgmt" -dns01 "127.0.0.1:$dns" \
    -http01 '' -https01 '' -tlsalpn01 '' -defaultIPv4 127.0.0.1 \
    >"$dir/challtestsrv.log" 2>&1 &
  EMU_PIDS+=("$!")
  trap emulators_stop EXIT
  PEBBLE_VA_NOSLEEP=1 pebble -config "$dir/pebble.json" -dnsserver "127.0.0.1:$dns" -strict \
    >"$dir/pebble.log" 2>&1 &
  EMU_PIDS+=("$!")
  wait_for "$dns_mgmt" 30
  wait_for "$acme" 30
  export JAAM_ACME_ROOT_CA="$dir/ca.pem"
  export JAAM_TEST_ACME_DIRECTORY="https://127.0.0.1:$acme/dir"
  export JAAM_TEST_PEBBLE_MANAGEMENT="https://127.0.0.1:$mgmt"
  export JAAM_TEST_CHALLTESTSRV="http://127.0.0.1:$dns_mgmt"
  echo "==> pebble at $JAAM_TEST_ACME_DIRECTORY, challtestsrv DNS on 127.0.0.1:$dns (logs in $dir)" >&2
}

# @simulacrum/github-api-simulator: checks every request against GitHub's schema.
github_simulator_start() {
  local port
  port=$(free_port)
  (cd "$EMU_NODE" && exec node github-simulator.mjs "$port") >"$JAAM_CACHE/github-simulator-$port.log" 2>&1 &
  EMU_PIDS+=("$!")
  trap emulators_stop EXIT
  wait_for "$port" 60
  export JAAM_TEST_GITHUB_SIMULATOR="http://127.0.0.1:$port"
  export JAAM_TEST_NODE_MODULES="$EMU_NODE/node_modules"
  echo "==> github-api-simulator at $JAAM_TEST_GITHUB_SIMULATOR" >&2
}

# A caching proxy of the npm registry (tests/node/npm-registry.py): the
# instance boxes' builds install from it, and its tarballs stay under
# $JAAM_CACHE/npm-registry between runs, so a warm machine downloads nothing.
npm_registry_start() {
  local port
  port=$(free_port)
  python3 "$EMU_SCRIPTS/../tests/node/npm-registry.py" "$port" "$JAAM_CACHE/npm-registry" \
    2>"$JAAM_CACHE/npm-registry-$port.log" &
  EMU_PIDS+=("$!")
  trap emulators_stop EXIT
  wait_for "http://127.0.0.1:$port/-/ping" 30
  export JAAM_TEST_NPM_REGISTRY="http://127.0.0.1:$port/"
  echo "==> npm registry proxy at $JAAM_TEST_NPM_REGISTRY (cache in $JAAM_CACHE/npm-registry)" >&2
}

emulators_stop() {
  local pid
  for pid in "${EMU_PIDS[@]}"; do
    # A server killed by SIGTERM reports 143: that is how it should end.
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  EMU_PIDS=()
  return 0
}
