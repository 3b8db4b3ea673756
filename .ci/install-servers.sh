#!/bin/sh
# Installs the servers the rclone provider's tests start on 127.0.0.1
# (storage/rclone/rclonetest): OpenSSH's sshd and ssh-keygen (SFTP) and
# Apache httpd with mod_dav (WebDAV), Debian packages. Nothing is started
# or enabled as a service: the tests run their own instances. About 20 s.
set -eu

if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null && [ -x /usr/sbin/apache2 ] &&
	[ -f /usr/lib/apache2/modules/mod_dav_fs.so ]; then
	echo "sshd and apache2 already installed"
	exit 0
fi
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing openssh-server, openssh-client and apache2 (apt-get)..."
$sudo apt-get update -qq
# policy-rc.d-less containers would try to start the services: keep them off.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends openssh-server openssh-client apache2 >/dev/null
