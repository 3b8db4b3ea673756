#!/bin/sh
# Installs rclone, which the rclone storage provider drives (storage/rclone,
# its tests and e2e), built from the Go module proxy: Debian 12's rclone
# (1.60.1) is too old (it fails overwrites on SFTP). Building takes 3 to 6
# minutes on 2 cores (4m41s of CPU, 157 MB binary).
set -eu
exec sh "$(dirname "$0")/go-install.sh" rclone github.com/rclone/rclone github.com/rclone/rclone v1.76.0
