#!/usr/bin/env bash
# System packages the tests need, from Debian: the PostgreSQL and MariaDB servers (the tests start their own)
# and Chromium for the dashboard's browser tests.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadb-install-db >/dev/null 2>&1 && [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
# The dashboard's browser tests drive Debian's Chromium through Playwright (no downloaded browsers).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
