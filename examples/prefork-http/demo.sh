#!/usr/bin/env bash
# demo.sh - the prefork-http demo: one load, three caches, one table.
#
#   examples/prefork-http/demo.sh [BUILD_DIR]      (./setup.sh demo runs it)
#
# For each mode (none, private, namestore) it starts prefork-http on a free
# port (and, for namestore, nsd on a private segment), drives it with wrk
# (items.lua: GET /item/<id>, id uniform over KEYS) for WARM seconds to
# reach the steady state, then for RUN seconds measured, and reads the
# server's /stats before and after.  In the namestore run it SIGKILLs one
# worker halfway through the measured part: the parent restarts it, and the
# table shows what that cost (wrk's socket errors: the killed worker's open
# connections) and what it did not (backend calls: the cache is intact).
#
# It stops everything it started and removes the segment on any exit,
# failure and Ctrl-C included.  Exit status: 0 when every run answered
# only 2xx and the killed worker was replaced; 1 otherwise.  The goals
# (speed-up, backend calls) are printed, not enforced: they depend on the
# machine.  Every setting can be changed through the environment.
set -euo pipefail

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
build=$(readlink -f "${1:-$here/../../build}")
server=$build/examples/prefork-http/prefork-http
nsd=$build/daemon/nsd
nsctl=$build/tools/nsctl

WORKERS=${WORKERS:-4}         # prefork workers
KEYS=${KEYS:-1000}            # ids 1..KEYS
TTL_MS=${TTL_MS:-5000}        # TTL of a cached item, both caches
BACKEND_US=${BACKEND_US:-2000} # simulated backend time per item
THREADS=${THREADS:-2}         # wrk threads
CONNS=${CONNS:-64}            # wrk connections (keep-alive)
WARM=${WARM:-5}               # seconds of load before measuring (not
                              # for mode none: it has nothing to warm)
RUN=${RUN:-10}                # seconds measured
MODES=${MODES:-none private namestore}

for f in "$server" "$nsd" "$nsctl"; do
	[[ -x $f ]] || { echo "demo.sh: $f is missing: build first" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "demo.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }

seg=nsdemo-http.$$
tmp=$(mktemp -d /tmp/prefork-http-demo.XXXXXX)
started=() # every pid this script started, and only those

# alive PID: PID exists and is not a zombie (our children stay zombies,
# which kill -0 still finds, until we wait for them).
alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}

# stop PID...: SIGTERM, SIGKILL after 5 s for what is left, reap, and
# forget the pids so that nothing kills them again once they are reused.
stop() {
	local p i left keep=()
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for ((i = 0; i < 50; i++)); do
		left=0
		for p in "$@"; do alive "$p" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for p in "$@"; do
		alive "$p" && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null || true
	done
	for p in "${started[@]}"; do
		[[ " $* " == *" $p "* ]] || keep+=("$p")
	done
	started=(${keep[@]+"${keep[@]}"})
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	((${#started[@]} == 0)) || stop "${started[@]}"
	"$nsctl" destroy "$seg" >/dev/null 2>&1 || true
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# http_get PORT PATH: the body of GET PATH (bash's /dev/tcp: no client
# program needed).
http_get() {
	local fd resp
	exec {fd}<>"/dev/tcp/127.0.0.1/$1"
	printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&"$fd"
	resp=$(cat <&"$fd")
	exec {fd}>&-
	printf '%s\n' "${resp#*$'\r\n\r\n'}"
}

# num JSON KEY: the first "KEY":NUMBER of JSON.
num() {
	grep -o "\"$2\":[0-9]*" <<<"$1" | head -n 1 | cut -d: -f2
}

# field LINE NAME: NAME=VALUE from wrk's WRK line (items.lua's done()).
field() {
	grep -o "$2=[0-9.]*" <<<"$1" | cut -d= -f2
}

wrk_run() { # PORT SECONDS
	wrk -t"$THREADS" -c"$CONNS" -d"$2"s --timeout 5s -s "$here/items.lua" \
		"http://127.0.0.1:$1" -- "$KEYS"
}

rows=()
declare -A rps backend errors restarts sockets
failed=0

run_mode() {
	local mode=$1 port spid npid=0 kpid=0 i before after out line
	local args=(--mode "$mode" --workers "$WORKERS" --port 0
		--port-file "$tmp/port" --ttl-ms "$TTL_MS" --backend-us "$BACKEND_US")

	if [[ $mode == namestore ]]; then
		args+=(--segment "$seg" --create --size $((64 << 20)))
	fi
	rm -f "$tmp/port"
	"$server" "${args[@]}" >"$tmp/server-$mode.log" 2>&1 &
	spid=$!
	started+=("$spid")
	for ((i = 0; i < 100; i++)); do
		[[ -s $tmp/port ]] && break
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ ! -s $tmp/port ]]; then
		echo "demo.sh: prefork-http --mode $mode did not start:" >&2
		cat "$tmp/server-$mode.log" >&2
		exit 1
	fi
	port=$(<"$tmp/port")
	if [[ $mode == namestore ]]; then
		"$nsd" --foreground --segment "$seg" >"$tmp/nsd.log" 2>&1 &
		npid=$!
		started+=("$npid")
	fi

	echo "demo.sh: $mode: $WORKERS workers on port $port, ${WARM}s warm-up, ${RUN}s measured" >&2
	[[ $mode == none || $WARM == 0 ]] || wrk_run "$port" "$WARM" >/dev/null
	before=$(http_get "$port" /stats)
	if [[ $mode == namestore ]]; then
		# Halfway through, SIGKILL worker 1 (a child of the server
		# started above).
		(
			sleep "$(awk "BEGIN { print $RUN / 2 }")"
			victim=$(http_get "$port" /stats | grep -o '"worker_pids":\[[0-9,]*' |
				cut -d[ -f2 | cut -d, -f2)
			echo "demo.sh: SIGKILL worker pid $victim" >&2
			kill -KILL "$victim"
		) &
		kpid=$!
		started+=("$kpid")
	fi
	out=$(wrk_run "$port" "$RUN")
	((kpid == 0)) || stop "$kpid"
	sleep 0.2 # let the parent record a restart
	after=$(http_get "$port" /stats)
	line=$(grep '^WRK ' <<<"$out")

	local calls=$(( $(num "$after" backend_calls) - $(num "$before" backend_calls) ))
	local hits=$(( $(num "$after" hits) - $(num "$before" hits) ))
	local misses=$(( $(num "$after" misses) - $(num "$before" misses) ))
	local errs=$(( $(num "$after" errors) - $(num "$before" errors) ))
	local rst=$(( $(num "$after" worker_restarts) - $(num "$before" worker_restarts) ))
	local sock=$(( $(field "$line" connect) + $(field "$line" read) +
		$(field "$line" write) + $(field "$line" timeout) ))
	local ratio=-
	if ((hits + misses > 0)); then
		ratio=$(awk "BEGIN { printf \"%.4f\", $hits / ($hits + $misses) }")
	fi
	rps[$mode]=$(field "$line" rps)
	sockets[$mode]="connect $(field "$line" connect), read $(field "$line" read), write $(field "$line" write), timeout $(field "$line" timeout)"
	((sock == 0)) || sockets[$mode]+=" (of $(field "$line" requests) requests)"
	backend[$mode]=$calls
	errors[$mode]=$(( errs + $(field "$line" status) ))
	restarts[$mode]=$rst
	rows+=("$(printf '| %-9s | %8s | %7.2f | %7.2f | %13s | %9s | %7s | %13s | %15s |' \
		"$mode" "${rps[$mode]}" \
		"$(awk "BEGIN { print $(field "$line" p50_us) / 1000 }")" \
		"$(awk "BEGIN { print $(field "$line" p99_us) / 1000 }")" \
		"$calls" "$ratio" "${errors[$mode]}" "$sock" "$rst")")

	stop "$spid"
	((npid == 0)) || stop "$npid"
	"$nsctl" destroy "$seg" >/dev/null 2>&1 || true
	if ((${errors[$mode]} != 0)); then
		echo "demo.sh: $mode: ${errors[$mode]} responses were not 2xx" >&2
		failed=1
	fi
}

for m in $MODES; do
	run_mode "$m"
done

echo
echo "prefork-http: $WORKERS workers, $(nproc) cores, wrk -t$THREADS -c$CONNS," \
	"ids uniform in 1..$KEYS, TTL $TTL_MS ms, backend $BACKEND_US us (sleep)," \
	"${RUN}s measured after ${WARM}s warm-up"
echo
echo "| mode      |    req/s | p50 ms  | p99 ms  | backend calls | hit ratio | non-2xx | socket errors | worker restarts |"
echo "| --------- | -------: | ------: | ------: | ------------: | --------: | ------: | ------------: | --------------: |"
printf '%s\n' "${rows[@]}"
echo

if [[ -n ${rps[none]:-} && -n ${rps[namestore]:-} ]]; then
	awk -v a="${rps[namestore]}" -v b="${rps[none]}" 'BEGIN {
		printf "namestore req/s / none req/s: %.1fx (goal: at least 5x): %s\n",
			a / b, (a >= 5 * b) ? "met" : "NOT met" }'
fi
if [[ -n ${backend[private]:-} && -n ${backend[namestore]:-} ]]; then
	awk -v a="${backend[namestore]}" -v b="${backend[private]}" -v n="$WORKERS" 'BEGIN {
		printf "namestore backend calls / private: %d / %d = 1/%.3f (goal: at most 1/%d): %s\n",
			a, b, b / a, n, (a * n <= b) ? "met" : "NOT met"
		printf "  (1/%d is the bound: a private cache makes at most one call per key per TTL per worker)\n", n }'
fi
for m in $MODES; do
	echo "wrk socket errors, $m: ${sockets[$m]}"
done
if [[ -n ${restarts[namestore]:-} ]]; then
	if ((${restarts[namestore]} == 1)); then
		echo "namestore: the SIGKILLed worker was restarted; the connections it held are wrk's read errors"
	else
		echo "demo.sh: expected 1 worker restart in namestore mode, saw ${restarts[namestore]}" >&2
		failed=1
	fi
fi
exit "$failed"
