#!/usr/bin/env bash
# Install what readscale's demo, tests and benchmarks need on a fresh Debian machine:
# the server packages (when missing) and a virtualenv with readscale and its extras.
# Idempotent: a second run installs nothing new.
# Usage: bash scripts/bootstrap.sh          everything: demo, tests, lint (docs site included), benchmarks
#        bash scripts/bootstrap.sh --demo   only what `readscale demo` needs (a newcomer's
#                                           first command: no browser, no test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
demo_only=false
case "${1:-}" in
  "") ;;
  --demo) demo_only=true ;;
  *) echo "bootstrap: unknown argument ${1} (use --demo or nothing)" >&2; exit 2 ;;
esac

# Debian packages: binary -> package. PostgreSQL's server binaries live off PATH.
need=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v varnishd >/dev/null || need+=(varnish)
compgen -G "/usr/lib/*/varnish/vmods/libvmod_xkey.so" >/dev/null || compgen -G "/usr/lib/varnish/vmods/libvmod_xkey.so" >/dev/null || need+=(varnish-modules)
if ! $demo_only; then
  command -v memcached >/dev/null || need+=(memcached)
  command -v wrk >/dev/null || need+=(wrk)
  command -v chromium >/dev/null || need+=(chromium)  # renders the demo's report in a test
  command -v node >/dev/null || need+=(nodejs)         # runs the HTTP caching conformance suite
  command -v npm >/dev/null || need+=(npm)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)  # builds the slow-disk shim of the write-behind crash tests
  command -v prometheus >/dev/null || need+=(prometheus)  # scrapes the demo's /metrics in a test
fi
if [ -n "$pg_bin" ]; then
  pg_major=$(basename "$(dirname "$pg_bin")")
  [ -e "/usr/lib/postgresql/$pg_major/lib/wal2json.so" ] || need+=("postgresql-$pg_major-wal2json")
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then need+=(python3-venv); fi

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; the project runs its own on its own ports.
  for svc in varnish memcached prometheus prometheus-node-exporter; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"readscale needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

full_stamp="$VENV/.readscale-installed"
demo_stamp="$VENV/.readscale-demo-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
current() { [ -f "$1" ] && ! [ pyproject.toml -nt "$1" ]; }
if $demo_only; then
  # A full install holds the demo's extras too.
  if ! current "$full_stamp" && ! current "$demo_stamp"; then
    echo "bootstrap: installing readscale with the demo's extras into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[demo]'
  fi
  touch "$demo_stamp"
elif ! current "$full_stamp"; then
  echo "bootstrap: installing readscale and its extras into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev,bench,docs]'
  touch "$full_stamp" "$VENV/.readscale-docs-installed"  # `make lint` builds the docs site
fi
if ! $demo_only; then
  # The HTTP caching conformance suite, from the npm registry into the virtualenv (pinned).
  bash tests/http/conformance/install.sh "$VENV/share/readscale-conformance"
fi
echo "bootstrap: ready"
