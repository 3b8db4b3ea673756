#!/bin/sh
# Many small uploads over a link with injected latency: S3 (versitygw) and
# WebDAV (Apache mod_dav through rclone) behind internal/latencyproxy on
# 127.0.0.1. Needs versitygw, rclone, apache2 (.ci/test installs them).
#
#   bench/latency/run.sh                 20 ms round trip, 400 objects, 400 files
#   RTT=50ms OBJECTS=1000 bench/latency/run.sh
set -eu
cd "$(dirname "$0")/../.."
export PATH="$(go env GOPATH | cut -d: -f1)/bin:$PATH"
COFFER_BENCH_LATENCY=1 go test -count=1 -timeout 20m -run 'TestLatency' ./bench/latency/ -v 2>&1 |
	grep -v -E '^(=== RUN|--- PASS|PASS|ok )'
