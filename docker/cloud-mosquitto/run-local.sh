#!/bin/sh
# The cloud Mosquitto of this directory on one machine, without Docker:
# mosquitto.conf and acl as they are here, a password file for the back-end and
# a locker, and the broker's persistence in DIR, so that running this again
# with the same DIR restarts it with the lockers' sessions (their queued
# downstream messages) and their retained statuses.
#
#   docker/cloud-mosquitto/run-local.sh [DIR]        # DIR default /tmp/locky-cloud
#
# Optional environment:
#   PORT      the listener's port, default 1884 (a gateway's local broker has 1883)
#   ADDR      the listener's address, default 127.0.0.1 (0.0.0.0: lockers on other hosts)
#   LOCKER    the locker id to give a login, default locker-0001; run again with
#             another id to add a locker
#   BACKEND_PASSWORD, LOCKER_PASSWORD
#             the passwords of a login DIR does not have yet; generated if unset.
#             DIR/<name>.password (mode 0600) keeps each one.
#
# It prints the locker's and the back-end's commands, then runs Mosquitto in
# the foreground: Ctrl-C stops it, and it saves its data as it stops. Started
# as root, Mosquitto drops to the user mosquitto (Debian package mosquitto),
# which then owns DIR/data; DIR must not lie under a directory closed to that
# user (as /root is).
set -eu

here=$(cd "$(dirname "$0")" && pwd -P)
dir=${1:-/tmp/locky-cloud}
port=${PORT:-1884}
addr=${ADDR:-127.0.0.1}
locker=${LOCKER:-locker-0001}

fail() {
	echo "run-local.sh: $*" >&2
	exit 1
}

mosquitto=$(command -v mosquitto || true)
[ -n "$mosquitto" ] || [ ! -x /usr/sbin/mosquitto ] || mosquitto=/usr/sbin/mosquitto
[ -n "$mosquitto" ] || fail "mosquitto is not installed: apt-get install mosquitto"
command -v mosquitto_passwd >/dev/null || fail "mosquitto_passwd is missing: apt-get install mosquitto"

case $port in
'' | *[!0-9]*) fail "PORT=$port is not a port number" ;;
esac
case $addr in
'' | *[!0-9A-Za-z.:-]*) fail "ADDR=$addr: give an IP address or a host name to listen on" ;;
esac
case $locker in
'' | *[!A-Za-z0-9._-]*) fail "LOCKER=$locker: a locker id here is letters, digits, '.', '_' and '-'" ;;
esac
[ "$locker" != backend ] || fail "LOCKER=backend is the back-end's login: choose another locker id"

mkdir -p "$dir" # its parents as the caller's umask makes them
umask 077
dir=$(cd "$dir" && pwd -P)
case $dir in
*[!A-Za-z0-9._/-]*) fail "$dir: choose a DIR whose path has only letters, digits, '.', '_', '-' and '/'" ;;
esac
[ -O "$dir" ] || fail "$dir belongs to another user: choose another DIR"
if [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/.run-local" ]; then
	fail "$dir holds other files: give a new or empty DIR, or one this script made"
fi
chmod 0700 "$dir"
echo "a cloud Mosquitto's data: docker/cloud-mosquitto/run-local.sh $dir" >"$dir/.run-local"

# Mosquitto started as root drops to the user mosquitto before it writes its
# persistence: that user owns DIR/data, and reads the config files through
# their group. Running the broker as root (user root) is not offered.
mkdir -p "$dir/data"
if [ "$(id -u)" -eq 0 ]; then
	runas=mosquitto
	id -u "$runas" >/dev/null 2>&1 ||
		fail "started as root, Mosquitto drops to the user mosquitto, which does not exist: install the Debian package mosquitto, or run this as an ordinary user"
	group=$(id -gn "$runas")
	chmod 0711 "$dir"
	chown "$runas:$group" "$dir/data"
	chmod 0700 "$dir/data"
	if command -v runuser >/dev/null && ! runuser -u "$runas" -- test -w "$dir/data" -a -x "$dir/data"; then
		fail "the user $runas cannot reach $dir/data (a directory above it is closed to other users, as /root is): choose a DIR elsewhere, such as /tmp/locky-cloud or /srv/locky-cloud"
	fi
fi

# One login per name, its password kept in DIR/<name>.password.
login() { # name, password given in the environment (may be empty)
	if [ -s "$dir/$1.password" ]; then
		if [ -n "$2" ] && [ "$2" != "$(cat "$dir/$1.password")" ]; then
			fail "$dir already has a password for $1: unset the variable to keep it, or delete $dir/$1.password to set a new one"
		fi
		grep -qs "^$1:" "$dir/passwd" && return
	fi
	pw=$2
	[ -n "$pw" ] || [ ! -s "$dir/$1.password" ] || pw=$(cat "$dir/$1.password")
	[ -n "$pw" ] || pw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	if [ -f "$dir/passwd" ]; then
		mosquitto_passwd -b "$dir/passwd" "$1" "$pw"
	else
		mosquitto_passwd -b -c "$dir/passwd" "$1" "$pw"
	fi
	printf '%s\n' "$pw" >"$dir/$1.password"
}
login backend "${BACKEND_PASSWORD:-}"
login "$locker" "${LOCKER_PASSWORD:-}"

cp "$here/acl" "$dir/acl"
{
	echo "# Written by run-local.sh from $here/mosquitto.conf;"
	echo "# it is written again at each start: change that file, or run-local.sh."
	sed -e "s#/mosquitto/config/#$dir/#g" -e "s#/mosquitto/data/#$dir/data/#g" \
		-e "s#^listener 1883\$#listener $port $addr#" "$here/mosquitto.conf"
	if [ "$(id -u)" -eq 0 ]; then
		echo "user $runas"
	fi
} >"$dir/mosquitto.conf.new"
if ! grep -q "^listener $port $addr\$" "$dir/mosquitto.conf.new" || grep -q '/mosquitto/' "$dir/mosquitto.conf.new"; then
	fail "$here/mosquitto.conf no longer has 'listener 1883' and /mosquitto/… paths where this script replaces them: update run-local.sh to match it"
fi
mv "$dir/mosquitto.conf.new" "$dir/mosquitto.conf"
if [ "$(id -u)" -eq 0 ]; then
	chgrp "$group" "$dir/mosquitto.conf" "$dir/acl" "$dir/passwd"
	chmod 0640 "$dir/mosquitto.conf" "$dir/acl" "$dir/passwd"
fi

host=$addr
case $host in 0.0.0.0 | ::) host=127.0.0.1 ;; esac
urlhost=$host
case $host in *:*) urlhost="[$host]" ;; esac
url="mqtt://$urlhost:$port"
cat <<EOF
Cloud Mosquitto on $url, its data in $dir. Ctrl-C stops it; running
this again with the same DIR starts it again on the same data.

A locker (from the repository root):
  LOCKY_CLOUD_PASSWORD="\$(cat $dir/$locker.password)" go run ./gateway/cmd/locky-gateway \\
    --locker-id $locker --cloud-url $url --cloud-username $locker
The back-end (from the repository root):
  export LOCKYCTL_URL=$url LOCKYCTL_USERNAME=backend LOCKYCTL_PASSWORD="\$(cat $dir/backend.password)"
  go run ./gateway/cmd/lockyctl online
  go run ./gateway/cmd/lockyctl watch --locker $locker
  mosquitto_sub -h $host -p $port -u backend -P "\$LOCKYCTL_PASSWORD" -v -t 'lockers/#'

EOF
exec "$mosquitto" -c "$dir/mosquitto.conf"
