#!/usr/bin/env bash
# bench/compare.sh - NameStore against LMDB, TDB, the one-rwlock table,
# Redis and memcached, over the whole matrix of issue 6, in one run:
#
#   value size 64 B and 1 KiB  x  gets 100 / 90 / 50 %  x  1, 2 and 4
#   processes (4 > the 2 cores here: oversubscribed)  x  uniform and Zipf
#   0.99 keys  x  100,000 and 1,000,000 keys
#
# Each cell is one nsbench invocation that runs every store one after the
# other on the same keys, values and loop, so the stores of a cell are
# measured minutes apart at most.  Every read is checked (nsbench fails the
# cell on a wrong value).  A cell with one process and 100% gets also times
# the pointer chase (the memory limit of a get).
#
#   bench/compare.sh [--seconds S] [--repeat R] [--quick] [--out DIR]
#
# --repeat R (default 3) runs every cell R times; report.py takes each
# store's median run per cell, so a slow spell of this shared VM (they last
# seconds here and moved single 2-second figures by up to 2x) hits one run
# of a store rather than the figure.
# --quick runs a 12-cell subset (64 B, 100,000 keys) to try the pipeline.
# Results: DIR/compare.jsonl (one JSON line per store, cell and run, appended
# fresh each run), then bench/report.py writes DIR/compare.md and the plots.
# Default DIR: bench/results.  Needs bench/setup-peers.sh to have run.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

seconds=2
repeat=3
quick=0
out=bench/results
while (($#)); do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--quick) quick=1; shift ;;
	--out) out=$2; shift 2 ;;
	-h|--help) sed -n '2,24p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

NSBENCH=build-rel/bench/nsbench
# NameStore runs as deployed, with its janitor: nsd pays the grace periods
# (one membarrier per tick) that the writers would otherwise pay, as the
# servers of Redis and memcached are part of theirs.
NSD=build-rel/daemon/nsd
if [[ ! -x $NSBENCH || ! -x $NSD ]]; then
	echo "compare.sh: $NSBENCH missing; run bench/setup-peers.sh" >&2
	exit 1
fi
mkdir -p "$out"
jsonl=$out/compare.jsonl
log=$out/compare.log
: >"$jsonl"
: >"$log"

if ((quick)); then
	keyss=(100000) sizes=(64) dists=(uniform zipf) reads=(100 90) procss=(1 2 4)
else
	keyss=(100000 1000000) sizes=(64 1024) dists=(uniform zipf)
	reads=(100 90 50) procss=(1 2 4)
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
label="commit=$commit host=$(uname -n) kernel=$(uname -r) repeat=$repeat"
{
	echo "# compare.sh $(date -u +%FT%TZ) $label seconds=$seconds"
	echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" \
		"x $(nproc)"
} | tee -a "$log"

cell_out=$(mktemp)
trap 'rm -f "$cell_out"' EXIT
failed=0
cells=0
for keys in "${keyss[@]}"; do
for size in "${sizes[@]}"; do
for dist in "${dists[@]}"; do
for read in "${reads[@]}"; do
for procs in "${procss[@]}"; do
	extra=()
	if ((procs == 1 && read == 100)); then
		extra=(--chase)
	fi
	cells=$((cells + 1))
	for ((rep = 1; rep <= repeat; rep++)); do
	echo "# cell $cells run $rep/$repeat: keys=$keys value=$size" \
		"dist=$dist read=$read procs=$procs" | tee -a "$log"
	status=0
	"$NSBENCH" -b all --nsd "$NSD" -p "$procs" -t "$seconds" -k "$keys" \
		-v "$size" -r "$read" -d "$dist" --json "$jsonl" \
		--label "$label" "${extra[@]}" >"$cell_out" 2>&1 || status=$?
	cat "$cell_out" >>"$log"
	grep -E '^(backend=[a-z]+ op=all|compare=ns_get|# backend=[a-z]+ failed)' \
		"$cell_out" | sed 's/^/#   /' || true
	if ((status != 0)); then
		failed=$((failed + 1))
		echo "# cell $cells run $rep FAILED (status $status, see $log)" |
			tee -a "$log"
	fi
	done
done
done
done
done
done

echo "# $cells cells x $repeat runs, $failed runs failed" | tee -a "$log"
python3 bench/report.py "$jsonl" "$out"
exit $((failed > 0))
