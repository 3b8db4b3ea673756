#!/bin/sh
# Installs versitygw, the S3 server the storage tests run against
# (storage/s3/s3test), into $(go env GOBIN) or $(go env GOPATH)/bin.
# Idempotent: does nothing if that version is already there. Building it
# takes about 2.5 minutes on 2 cores; cache the bin directory in CI.
set -eu

VERSION=v1.8.0
MODULE=github.com/versity/versitygw

bindir=$(go env GOBIN)
if [ -z "$bindir" ]; then
	bindir=$(go env GOPATH | cut -d: -f1)/bin
fi
bin="$bindir/versitygw"

if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
	grep -Eq "^[[:space:]]+mod[[:space:]]+$MODULE[[:space:]]+$VERSION([[:space:]]|\$)"; then
	echo "versitygw $VERSION already installed at $bin"
	exit 0
fi

echo "installing versitygw $VERSION into $bindir (takes a few minutes)..."
go install "$MODULE/cmd/versitygw@$VERSION"
go version -m "$bin" | grep -E "^[[:space:]]+mod[[:space:]]"
