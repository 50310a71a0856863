#!/bin/sh
# build-artifact.sh NAME [OUTDIR]: builds the gateway as README.md shows
# (static, CGO_ENABLED=0, version NAME) and writes one Mender Artifact per
# architecture for the update module docker/mender/locky-gateway:
#   OUTDIR/locky-gateway-NAME-ARCH.mender (OUTDIR: the current directory)
# for ARCH in $ARCHES (arm64 armv7 amd64). An Artifact installs on devices
# whose device type (/var/lib/mender/device_type) is locky-ARCH, or the type
# set in DEVICE_TYPE_arm64, DEVICE_TYPE_armv7 or DEVICE_TYPE_amd64.
# Needs go and mender-artifact (Debian: apt-get install mender-artifact).
#
#   docker/mender/build-artifact.sh "$(git describe --always)" out/
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
	echo "usage: $0 NAME [OUTDIR]" >&2
	exit 2
fi
name=$1
mkdir -p "${2:-.}"
out=$(cd "${2:-.}" && pwd)
command -v mender-artifact >/dev/null || {
	echo "$0: mender-artifact not found (apt-get install mender-artifact)" >&2
	exit 1
}
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for arch in ${ARCHES:-arm64 armv7 amd64}; do
	case $arch in
	arm64) goarch=arm64 goarm= ;;
	armv7) goarch=arm goarm=7 ;;
	amd64) goarch=amd64 goarm= ;;
	*)
		echo "$0: unknown architecture $arch (arm64, armv7 or amd64)" >&2
		exit 2
		;;
	esac
	eval "device_type=\${DEVICE_TYPE_$arch:-locky-$arch}"
	mkdir -p "$work/$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
		-ldflags "-s -w -X github.com/locky-edge/locky/gateway.Version=$name" \
		-o "$work/$arch/locky-gateway" ./gateway/cmd/locky-gateway
	mender-artifact write module-image -T locky-gateway -t "$device_type" -n "$name" \
		-f "$work/$arch/locky-gateway" -o "$out/locky-gateway-$name-$arch.mender"
	echo "$out/locky-gateway-$name-$arch.mender (device type $device_type)"
done
