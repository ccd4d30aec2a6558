#!/usr/bin/env bash
# Install the HTTP caching conformance suite (npm package http-cache-tests, pinned with its
# dependencies by package-lock.json beside this script) into DEST from the npm registry.
# Never copied into the repository; idempotent (a second run with the same lock does
# nothing). Called by scripts/bootstrap.sh, and by the tests if it has not run.
# Usage: bash tests/http/conformance/install.sh DEST
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:?usage: install.sh DEST}"
if cmp -s "$here/package-lock.json" "$dest/.installed-lock" && [ -f "$dest/node_modules/http-cache-tests/package.json" ]; then
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "conformance: $tool is missing (Debian packages nodejs and npm; scripts/bootstrap.sh installs them)" >&2; exit 1; }
done
echo "conformance: installing http-cache-tests from the npm registry into $dest"
mkdir -p "$dest"
rm -f "$dest/.installed-lock"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
# --ignore-scripts: nothing from the registry runs at install time.
(cd "$dest" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
cp "$here/package-lock.json" "$dest/.installed-lock"
