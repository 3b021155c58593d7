#!/usr/bin/env bash
# Installs the Debian packages and the Podman drop-in config that the test suite and the
# demo need. Idempotent: installs only what is missing. As non-root it changes nothing and
# prints exactly what to run, then exits non-zero if anything is missing.
set -euo pipefail

# debootstrap: tests/integration/test_deploy_chroot.py deploys into a fresh Debian root.
PACKAGES=(podman runc docker.io docker-registry busybox-static iptables uidmap debootstrap)
DROPIN=/etc/containers/containers.conf.d/50-signalbeam.conf
# crun fails on these hosts' hybrid cgroups; runc needs explicit ulimits because the
# defaults it would set exceed what the sandbox permits ("setrlimit: operation not permitted").
DROPIN_CONTENT='# Written by SignalBeam deploy/dev/system-deps.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"'

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

dropin_ok=1
if [[ ! -f "$DROPIN" ]] || [[ "$(cat "$DROPIN")" != "$DROPIN_CONTENT" ]]; then
    dropin_ok=0
fi

if [[ ${#missing[@]} -eq 0 && $dropin_ok -eq 1 ]]; then
    echo "system-deps: all present (${PACKAGES[*]}; $DROPIN)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps: missing pieces, and not root so nothing was changed." >&2
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "  run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    fi
    if [[ $dropin_ok -eq 0 ]]; then
        echo "  and write $DROPIN with:" >&2
        echo "$DROPIN_CONTENT" | sed 's/^/    /' >&2
    fi
    exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "system-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ $dropin_ok -eq 0 ]]; then
    mkdir -p "$(dirname "$DROPIN")"
    printf "%s" "$DROPIN_CONTENT" > "$DROPIN"
    echo "system-deps: wrote $DROPIN"
fi
