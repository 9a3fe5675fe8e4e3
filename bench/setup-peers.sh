#!/usr/bin/env bash
# bench/setup-peers.sh - install what the comparison needs and build nsbench
# with every peer store, in build-rel/ (release, no fault points).
#
# Installs only what is missing (and runs apt-get update only then), like
# setup.sh: the peers' client libraries and servers, gnuplot for the plots
# and python3 for the report.  The servers are only installed; nsbench
# starts its own for each run and stops them after it.  Idempotent.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

PACKAGES=(meson ninja-build pkg-config gcc liburcu-dev libatomic-ops-dev
	libcmocka-dev liblmdb-dev libtdb-dev libhiredis-dev libmemcached-dev
	redis-server memcached gnuplot-nox python3)
BUILD_DIR=build-rel

missing=()
for pkg in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
		grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done
if ((${#missing[@]} > 0)); then
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		sudo=(sudo)
	fi
	echo "setup-peers.sh: installing ${missing[*]}"
	${sudo[@]+"${sudo[@]}"} apt-get update
	# Where an init system runs, the packages of redis-server and
	# memcached also start a system service on the default port; the
	# benchmark does not use it (its servers listen on private sockets).
	${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Every peer is required here, so a missing library fails the configure
# instead of silently leaving a store out of the comparison.
peers=(-Dbench_lmdb=enabled -Dbench_tdb=enabled -Dbench_redis=enabled
	-Dbench_memcached=enabled)
if [[ ! -f $BUILD_DIR/build.ninja ]]; then
	meson setup "$BUILD_DIR" --buildtype=release "${peers[@]}"
else
	meson configure "$BUILD_DIR" "${peers[@]}"
fi
ninja -C "$BUILD_DIR"
