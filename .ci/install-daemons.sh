#!/usr/bin/env bash
# Install the real mail and web daemons that tests/integration/daemons starts, and the
# headless Chromium (with a font) that tests/e2e drives through Playwright.
#
# Idempotent and non-interactive, for a fresh Debian 12 machine as root (CI or a
# developer box). The tests run their own instances with private config directories on
# loopback high ports; the system-wide instances are never used, so this script keeps
# them from starting (policy-rc.d during the install) and stops any that are running.
set -euo pipefail

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-daemons.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

packages=(
    postfix
    dovecot-core
    dovecot-imapd
    dovecot-pop3d
    nginx-light
    openssl
    ca-certificates
    chromium
    fonts-dejavu-core
)

# Binaries the fixtures look for; when all of them are there, nothing is installed.
needed_binaries=(
    /usr/sbin/postfix
    /usr/sbin/postconf
    /usr/sbin/dovecot
    /usr/sbin/nginx
    /usr/bin/openssl
    /usr/bin/chromium
)

missing=0
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing=1
    fi
done
for bin in "${needed_binaries[@]}"; do
    [[ -x "$bin" ]] || missing=1
done

if [[ "$missing" -eq 1 ]]; then
    # Postfix asks how to configure itself: the tests bring their own main.cf.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string tlsfleet.test" | debconf-set-selections

    # Keep maintainer scripts from starting the system-wide daemons (they would
    # grab ports 25/143/80/... and are not what the tests talk to).
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    cleanup() {
        if [[ "$created_policy" -eq 1 ]]; then
            rm -f "$policy"
        fi
    }
    trap cleanup EXIT

    # Update the package lists only if they are missing or the install fails on
    # stale ones.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        apt-get update -qq
    fi
    install_packages() {
        apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${packages[@]}"
    }
    if ! install_packages; then
        apt-get update -qq
        install_packages
    fi
fi

# Stop and disable the system instances, whatever started them (an earlier install
# without policy-rc.d, a developer). Never fatal: on a machine without an init system
# the services are simply not running.
for svc in postfix dovecot nginx; do
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if [[ -x "/etc/init.d/$svc" ]]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done
# The system Postfix's config directory has no main.cf under "No configuration", so
# it cannot run anyway; make sure no instance started against the default directory.
if [[ -f /etc/postfix/main.cf ]]; then
    postfix stop >/dev/null 2>&1 || true
fi

# The fixtures run the daemons as these package-created users.
for user in postfix dovecot dovenull; do
    if ! id "$user" >/dev/null 2>&1; then
        echo "install-daemons.sh: user $user missing after install" >&2
        exit 1
    fi
done
getent group postdrop >/dev/null || {
    echo "install-daemons.sh: group postdrop missing after install" >&2
    exit 1
}

echo "install-daemons.sh: $(/usr/sbin/postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /')," \
    "dovecot $(/usr/sbin/dovecot --version | cut -d' ' -f1)," \
    "$(/usr/sbin/nginx -v 2>&1 | sed 's|nginx version: ||')," \
    "$(/usr/bin/chromium --version 2>/dev/null | sed 's/^Chromium /chromium /' | cut -d' ' -f1-2)"
