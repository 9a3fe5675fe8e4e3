#!/usr/bin/env bash
# setup.sh - install what NameStore needs, build it, and run the demo or the
# test suite.  Meant for a fresh Debian bookworm with gcc, make and git, run
# as root; running it again only rebuilds what changed.
#
#   ./setup.sh demo   build, then run build/examples/ns-demo
#   ./setup.sh test   build, then run the test suite with meson test
set -euo pipefail

# Work from the repository root whatever the caller's directory is.
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

PACKAGES=(meson ninja-build pkg-config g++ liburcu-dev libatomic-ops-dev
	libcmocka-dev)
BUILD_DIR=build

usage() {
	echo "usage: $0 demo|test" >&2
	exit 2
}

# Install only the packages that are missing, and refresh the package lists
# only when something has to be installed, so a second run touches nothing.
install_deps() {
	local missing=() pkg sudo=()

	for pkg in "${PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
			grep -q 'install ok installed'; then
			missing+=("$pkg")
		fi
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	if [[ $(id -u) -ne 0 ]]; then
		if command -v sudo >/dev/null 2>&1; then
			sudo=(sudo)
		else
			echo "setup.sh: need root to install: ${missing[*]}" >&2
			exit 1
		fi
	fi
	echo "setup.sh: installing ${missing[*]}"
	${sudo[@]+"${sudo[@]}"} apt-get update
	${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}"
}

# Configure once with the default build type, then let ninja do the rest
# (it re-runs meson by itself when a meson.build changes).  A build
# directory with meson's state but no build.ninja is the remains of an
# interrupted setup, and is configured again from scratch.
build() {
	if [[ ! -f $BUILD_DIR/build.ninja ]]; then
		if [[ -f $BUILD_DIR/meson-private/coredata.dat ]]; then
			meson setup --wipe "$BUILD_DIR"
		else
			meson setup "$BUILD_DIR"
		fi
	fi
	ninja -C "$BUILD_DIR"
}

[[ $# -eq 1 ]] || usage
case $1 in
demo)
	install_deps
	build
	exec "$BUILD_DIR/examples/ns-demo"
	;;
test)
	install_deps
	build
	status=0
	meson test -C "$BUILD_DIR" --print-errorlogs || status=$?
	exit "$status"
	;;
*)
	usage
	;;
esac
