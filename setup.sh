#!/usr/bin/env bash
# setup.sh - install what NameStore needs, build it, and run the demo or the
# test suite.  Meant for a fresh Debian bookworm with gcc, make and git, run
# as root; running it again only rebuilds what changed.
#
#   ./setup.sh demo   build, then run the prefork HTTP demo
#                     (examples/prefork-http/demo.sh: nsd, the server in
#                     three cache modes, wrk, a table)
#   ./setup.sh test   build every variant and run the tests that fit each:
#                     build/ (all tests), build-asan/ (ASan+UBSan, all
#                     tests), build-tsan/ (TSan, suite 'threads'), and
#                     build/ again under valgrind memcheck (suite 'unit')
#   ./setup.sh quick  build/ only, all its tests (for developers)
#
# Every build uses -Dwerror=true.  All variants run even when one fails;
# the exit status is non-zero if any failed.
set -euo pipefail

# Work from the repository root whatever the caller's directory is.
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

PACKAGES=(meson ninja-build pkg-config g++ liburcu-dev libatomic-ops-dev
	libcmocka-dev valgrind cppcheck clang-tidy clang libclang-rt-14-dev)
# Only for the demo: wrk is the HTTP load generator that drives the prefork
# server (examples/prefork-http/README.md).
DEMO_PACKAGES=(wrk)
BUILD_DIR=build

usage() {
	echo "usage: $0 demo|test|quick" >&2
	exit 2
}

# install_deps PACKAGE...: install only the packages that are missing, and
# refresh the package lists only when something has to be installed, so a
# second run touches nothing.
install_deps() {
	local missing=() pkg sudo=()

	for pkg in "$@"; do
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

# build DIR [MESON_OPTION...]: configure DIR once with the default build
# type and these options, then let ninja do the rest (it re-runs meson by
# itself when a meson.build changes).  A build directory with meson's state
# but no build.ninja is the remains of an interrupted setup, and is
# configured again from scratch.  When the options differ from those DIR
# was last set up with (recorded in DIR/setup-options), meson configure
# applies them.
build() {
	local dir=$1
	shift
	if [[ ! -f $dir/build.ninja ]]; then
		if [[ -f $dir/meson-private/coredata.dat ]]; then
			meson setup --wipe "$dir" "$@"
		else
			meson setup "$dir" "$@"
		fi
	elif [[ $(cat "$dir/setup-options" 2>/dev/null) != "$*" ]]; then
		meson configure "$dir" "$@"
	fi
	echo "$*" >"$dir/setup-options"
	ninja -C "$dir"
}

# run_tests DIR [MESON_TEST_OPTION...]: the tests, counted by .ci/run from
# DIR/meson-logs/testlog*.json.  Sanitizer options come from the tests'
# environment (tests/meson.build).
run_tests() {
	local dir=$1
	shift
	meson test -C "$dir" --print-errorlogs "$@"
}

# One function per variant; VARIANTS is the order ./setup.sh test runs them.
variant_normal() {
	build build -Dwerror=true && run_tests build
}

# Every test under AddressSanitizer and UndefinedBehaviorSanitizer: the
# multi-process ones too, with nsd and nsctl built with them.
variant_asan() {
	build build-asan -Dwerror=true -Db_sanitize=address,undefined &&
		run_tests build-asan --no-suite lint
}

# ThreadSanitizer sees one process only: the tests with many client
# threads in one process (suite 'threads').
variant_tsan() {
	build build-tsan -Dwerror=true -Db_sanitize=thread &&
		run_tests build-tsan --suite threads
}

# memcheck on the normal build (test setup 'valgrind' in meson.build): the
# single-process tests and those others that finish in reasonable time
# under it (suite 'valgrind').
variant_valgrind() {
	build build -Dwerror=true &&
		run_tests build --setup valgrind --suite unit --suite valgrind
}

# The libFuzzer targets (tests/fuzz/README.md), built with clang, ASan and
# UBSan, each run for fuzz_seconds (30) from the seed corpus (suite 'fuzz').
variant_fuzz() {
	CC=clang build build-fuzz -Dwerror=true -Dfuzz=enabled &&
		run_tests build-fuzz --suite fuzz
}

VARIANTS=(normal asan tsan valgrind fuzz)

# Run each variant even if an earlier one failed, with its wall time.
run_variants() {
	local v start status=0

	for v in "$@"; do
		echo "setup.sh: == variant $v =="
		start=$SECONDS
		"variant_$v" || status=1
		echo "setup.sh: == variant $v: $((SECONDS - start)) s =="
	done
	return "$status"
}

[[ $# -eq 1 ]] || usage
case $1 in
demo)
	install_deps "${PACKAGES[@]}" "${DEMO_PACKAGES[@]}"
	build "$BUILD_DIR" -Dwerror=true
	exec examples/prefork-http/demo.sh "$BUILD_DIR"
	;;
test)
	install_deps "${PACKAGES[@]}"
	run_variants "${VARIANTS[@]}"
	;;
quick)
	install_deps "${PACKAGES[@]}"
	run_variants normal
	;;
*)
	usage
	;;
esac
