#!/bin/sh
# test_nsbench.sh NSBENCH - a short run of nsbench and its argument errors,
# in TAP.  Checks that the stores always built (ns, rwlock) run with every
# read checked and no error, that the JSON lines and the chase are
# written, that a sampled run (--sample) still counts and checks every
# operation, and that a bad store name or sample fails with a message.
set -u
NSBENCH=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

echo "1..9"
"$NSBENCH" -b ns,rwlock -p 2 -t 0.3 -k 2000 -r 50 --chase \
	--json "$tmp/r.jsonl" >"$tmp/out" 2>"$tmp/err"
st=$?
check "a short run of ns and rwlock exits 0" "[ $st -eq 0 ]"
check "both stores report bad=0 errors=0" \
	"[ \$(grep -c 'op=all .*errors=0 bad=0' '$tmp/out') -eq 2 ]"
check "one JSON line per store and one for the chase" \
	"[ \$(grep -c '\"ok\":true' '$tmp/r.jsonl') -eq 3 ]"
check "the chase reports ns per hop" "grep -q '^backend=chase .*ns_per_hop=' '$tmp/out'"
"$NSBENCH" -b nosuch -t 0.1 >"$tmp/out2" 2>"$tmp/err2"
st=$?
check "an unknown store is a usage error (exit 2)" "[ $st -eq 2 ]"
check "and says which names exist" "grep -q \"unknown store 'nosuch'\" '$tmp/err2'"
"$NSBENCH" -b ns,rwlock -p 1 -t 0.3 -k 2000 -r 90 --sample 16 >"$tmp/out3" 2>"$tmp/err3"
st=$?
check "a run timing one operation in 16 exits 0" "[ $st -eq 0 ]"
check "and both stores report bad=0 errors=0" \
	"[ \$(grep -c 'op=all .*errors=0 bad=0' '$tmp/out3') -eq 2 ]"
"$NSBENCH" -b ns --sample 0 -t 0.1 >"$tmp/out4" 2>"$tmp/err4"
st=$?
check "--sample 0 is a usage error naming the option" \
	"[ $st -eq 2 ] && grep -q -- \"bad value '0' for --sample\" '$tmp/err4'"
