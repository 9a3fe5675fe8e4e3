#!/bin/sh
# replay.sh SRCDIR EXE... - run each fuzz target, built with driver.c as
# EXE (NAME_replay), over its seed corpus SRCDIR/corpus/NAME and its
# regression inputs SRCDIR/regress/NAME.  TAP on stdout; a target's own
# output goes to a log whose tail is shown when it fails.
src=$1
shift
echo "1..$#"
n=0
fail=0
log=$(mktemp "${TMPDIR:-/tmp}/fuzz_replay.XXXXXX")
trap 'rm -f "$log"' EXIT
for exe in "$@"; do
	n=$((n + 1))
	name=$(basename "$exe" _replay)
	set --
	for d in "$src/corpus/$name" "$src/regress/$name"; do
		[ -d "$d" ] && set -- "$@" "$d"
	done
	if [ $# -eq 0 ]; then
		echo "ok $n - $name # SKIP no corpus"
		continue
	fi
	if "$exe" "$@" >"$log" 2>&1; then
		echo "ok $n - $name: $(tail -n 1 "$log")"
	else
		echo "not ok $n - $name: a corpus or regression input failed"
		tail -n 30 "$log" | sed 's/^/# /'
		fail=1
	fi
done
exit $fail
