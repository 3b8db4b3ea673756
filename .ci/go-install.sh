#!/bin/sh
# Usage: sh .ci/go-install.sh NAME MODULE PACKAGE VERSION
# Installs the Go command PACKAGE@VERSION (of module MODULE) as NAME into
# $(go env GOBIN) or $(go env GOPATH)/bin, built from the Go module proxy.
# Idempotent: does nothing if a binary built from that module version is
# already there. The install-*.sh scripts call it; cache the bin directory
# in CI.
set -eu

name=$1 module=$2 package=$3 version=$4

bindir=$(go env GOBIN)
if [ -z "$bindir" ]; then
	bindir=$(go env GOPATH | cut -d: -f1)/bin
fi
bin="$bindir/$name"

if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
	grep -Eq "^[[:space:]]+mod[[:space:]]+$module[[:space:]]+$version([[:space:]]|\$)"; then
	echo "$name $version already installed at $bin"
	exit 0
fi

echo "installing $name $version into $bindir (takes a few minutes)..."
go install "$package@$version"
go version -m "$bin" | grep -E "^[[:space:]]+mod[[:space:]]+$module"
