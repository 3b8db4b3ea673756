#!/bin/sh
# Installs rclone, which the rclone storage provider drives (storage/rclone,
# its tests and e2e), into $(go env GOBIN) or $(go env GOPATH)/bin, built
# from the Go module proxy: Debian 12's rclone (1.60.1) is too old (it
# fails overwrites on SFTP). Idempotent: does nothing if that version is
# already there. Building takes 3 to 6 minutes on 2 cores (4m41s of CPU,
# 157 MB binary); cache the bin directory in CI.
set -eu

VERSION=v1.76.0
MODULE=github.com/rclone/rclone

bindir=$(go env GOBIN)
if [ -z "$bindir" ]; then
	bindir=$(go env GOPATH | cut -d: -f1)/bin
fi
bin="$bindir/rclone"

if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
	grep -Eq "^[[:space:]]+mod[[:space:]]+$MODULE[[:space:]]+$VERSION([[:space:]]|\$)"; then
	echo "rclone $VERSION already installed at $bin"
	exit 0
fi

echo "installing rclone $VERSION into $bindir (takes a few minutes)..."
go install "$MODULE@$VERSION"
go version -m "$bin" | grep -E "^[[:space:]]+mod[[:space:]]+$MODULE"
