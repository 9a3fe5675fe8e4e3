#!/bin/sh
# run.sh SRCDIR SECONDS FUZZER... - a short libFuzzer run of each FUZZER
# (built with -Dfuzz=enabled) for SECONDS, on a copy of its seed corpus
# (SRCDIR/corpus/NAME) in a temporary directory, so the tree is never
# written.  Prints TAP: "ok 1 - fuzz_ops: 51234 runs in 30 s".  A crash
# leaves its reproducer in $FUZZ_ARTIFACTS (default: the current
# directory); copy it to SRCDIR/regress/NAME/<what-broke> once fixed.
src=$1
secs=$2
shift 2
echo "1..$#"
n=0
fail=0
work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_run.XXXXXX")
trap 'rm -rf "$work"' EXIT
art=${FUZZ_ARTIFACTS:-$PWD}
for exe in "$@"; do
	n=$((n + 1))
	name=$(basename "$exe")
	mkdir -p "$work/$name"
	cp "$src/corpus/$name"/* "$work/$name"/ 2>/dev/null
	dict=
	[ -f "$src/$name.dict" ] && dict="-dict=$src/$name.dict"
	# -close_fd_mask=3: the targets' own output (nsctl's) is noise;
	# libFuzzer's report still goes to stderr.
	if "$exe" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
		-close_fd_mask=3 -print_final_stats=1 $dict \
		-artifact_prefix="$art/$name-" "$work/$name" >"$work/$name.log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name.log")
		echo "ok $n - $name: ${runs:-?} runs in $secs s"
	else
		echo "not ok $n - $name: crashed; reproducer in $art/$name-*"
		grep -v '^#\|^INFO\|^\[' "$work/$name.log" | tail -n 40 | sed 's/^/# /'
		fail=1
	fi
done
exit $fail
