#!/usr/bin/env bash
# apt_install.sh PACKAGE: install a Debian package when running as root with apt-get (refreshing
# the package lists once if the first try fails, as on a fresh machine); a no-op otherwise.
# Exits 1, with apt-get's last lines and what to run, if apt-get could not install it. Used by
# ensure_browser.sh and ensure_sandbox.sh, which check the result themselves.
set -euo pipefail
package="$1"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  exit 0
fi
echo "installing $package with apt-get (Debian's package)"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y "$package" >"$log" 2>&1; then
  if ! { apt-get update >>"$log" 2>&1 && apt-get install -y "$package" >>"$log" 2>&1; }; then
    tail -n 15 "$log" >&2
    rm -f "$log"
    echo "error: apt-get could not install $package (see above)." >&2
    echo "Fix: run 'apt-get update && apt-get install -y $package' and read its error." >&2
    exit 1
  fi
fi
rm -f "$log"
