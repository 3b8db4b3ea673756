#!/bin/sh
# Installs what the PKCS#11 tests need (internal/server/sealing/pkcs11, internal/server/replica):
# SoftHSM2 (module /usr/lib/softhsm/libsofthsm2.so and softhsm2-util) and a C
# compiler, since github.com/miekg/pkcs11 needs cgo (without gcc, Go builds
# with cgo off and the PKCS#11 tests are not even compiled).
# Idempotent: installs nothing when both are there. Debian/Ubuntu, as root
# (or with sudo).
#
# The tests skip with a message when SoftHSM2 is missing, unless CI=true:
# then they fail, so CI proves the PKCS#11 path. They make their own
# SOFTHSM2_CONF and token directory under the test's temp dir; set
# COFFER_PKCS11_MODULE to test another module path.
set -eu

module=${COFFER_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
pkgs=""
if [ ! -e "$module" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
	pkgs="$pkgs softhsm2"
fi
if ! command -v gcc >/dev/null 2>&1; then
	pkgs="$pkgs gcc libc6-dev"
fi
if [ -z "$pkgs" ]; then
	echo "softhsm2 and gcc already installed ($module)"
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
echo "installing:$pkgs"
$sudo apt-get update
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $pkgs
if [ ! -e "$module" ]; then
	echo "softhsm2 installed but $module is missing; set COFFER_PKCS11_MODULE" >&2
	exit 1
fi
softhsm2-util --version
