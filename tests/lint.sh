#!/usr/bin/env bash
# lint.sh SRCDIR BUILDDIR - cppcheck and clang-tidy over lib/, and the
# torture's list of fault points against lib/, as TAP.
#
# Both must report nothing (issue 7).  What each leaves out, and why, is
# in .clang-tidy and in the cppcheck arguments below.  A tool that is not
# installed is a skip with its name, never a pass: ./setup.sh installs both.
set -u

src=$1
build=$2
cd "$src" || exit 1

echo "1..3"

n=0
run() { # NAME COMMAND...: one TAP line; the tool's output as diagnostics
	local name=$1 out status
	shift
	n=$((n + 1))
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "ok $n - $name # SKIP $1 is not installed"
		return
	fi
	out=$("$@" 2>&1)
	status=$?
	if ((status == 0)); then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name (exit $status)"
		sed 's/^/# /' <<<"$out"
		failed=1
	fi
}

failed=0
# --enable=warning,style,performance,portability: everything but the
# "unusedFunction" whole-program check, which cannot see the tests and the
# daemon that use lib/'s internal entry points.  The defines are those of a
# default (debug) build of the library, fault points included.
run "cppcheck lib/" cppcheck --quiet --error-exitcode=1 --inline-suppr \
	--enable=warning,style,performance,portability --std=c11 \
	-DNS_BUILDING_LIBRARY -DNS_FAULT_POINTS -D__x86_64__ \
	-I lib -I lib/include lib/
# The checks are in .clang-tidy; -p gives clang-tidy the build's flags.
run "clang-tidy lib/" clang-tidy --quiet -p "$build" lib/*.c

# The torture makes clients die at every fault point of the library: a new
# NS_FAULT in lib/ must be added to its lists (or to the excuse below).
n=$((n + 1))
missing=$(grep -rhoE --exclude=fault.c 'NS_FAULT\("[a-z_:]+"\)' lib/ | sed 's/.*("\(.*\)")/\1/' |
	sort -u | while read -r f; do
		[[ $f == create:initialized ]] && continue # clients attach, never create
		grep -q "\"$f\"" tests/torture.c || echo "$f"
	done)
if [[ -z $missing ]]; then
	echo "ok $n - every fault point of lib/ is in tests/torture.c"
else
	echo "not ok $n - fault points missing from tests/torture.c: $(echo $missing)"
	failed=1
fi
exit "$failed"
