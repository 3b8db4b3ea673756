#!/bin/sh
# Installs versitygw, the S3 server the storage tests run against
# (storage/s3/s3test). Building it takes about 2.5 minutes on 2 cores.
set -eu
exec sh "$(dirname "$0")/go-install.sh" versitygw github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
