# shellcheck shell=bash
# bench/lib.sh — what bench/scale and bench/idle share; sourced, not run.
#
# Provides: die/log, a temp dir removed on exit with every process started
# (PIDS) stopped by its PID, /proc readers, the id scheme of the wrk scripts
# (ids.lua and id_of), a private nginx upstream that makes up a completed
# Response of about BODY_SIZE bytes for any id resp_<hex>, and start_rc /
# stop_rc for respcache daemons. The caller sets BENCH (its name), REPO,
# RESPCACHE, TMPBASE, BODY_SIZE, SRV_CPU, LOAD_CPU, AUTH_VALUE before use.

die() { printf '%s: %s\n' "$BENCH" "$*" >&2; exit 1; }
log() { printf '%s: [%s] %s\n' "$BENCH" "$(date +%T)" "$*" >&2; }

need_tools() {
	local t missing=()
	for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
	((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian: apt-get install nginx-light wrk curl)"
}

# --- temp dir, processes, cleanup ---------------------------------------------------
PIDS=()  # every background process started; stopped by PID on exit

# shellcheck disable=SC2317  # invoked by trap
bench_cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n ${TMP:-} && -d $TMP ]]; then
		if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
	fi
	exit "$rc"
}

bench_tmp() {  # -> TMP, with the traps set
	TMP=$(mktemp -d "$TMPBASE/respcache-$BENCH.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

forget_pid() {
	local p keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# stop_proc PID SIGNAL SECONDS NAME: signal, wait (bounded), SIGKILL if needed;
# returns 1 if it had to.
stop_proc() {
	local pid=$1 sig=$2 secs=$3 name=$4 i rc=0
	kill -"$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name (pid $pid) still there ${secs}s after SIG$sig: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		rc=1
	fi
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
	return $rc
}

# --- /proc --------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
proc_stat() {  # PID -> "utime+stime minflt majflt" (clock ticks; all threads)
	local s
	s=$(<"/proc/$1/stat") || return 1
	awk '{ print $12 + $13, $8, $10 }' <<<"${s##*) }"
}
cpu_jiffies() {  # CPU -> "busy idle" jiffies (busy: all but idle and iowait)
	awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, $5 + $6 }' /proc/stat
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }  # PID FIELD (VmRSS, RssAnon, ...)
port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
# us_per TICKS REQUESTS: clock ticks of CPU as µs per request
us_per() { awk -v t="$1" -v hz="$CLK_TCK" -v r="$2" 'BEGIN { printf "%.2f", r ? t / hz * 1e6 / r : 0 }'; }

# field LINE NAME: the value of NAME=... in a "TAG k=v k=v" line.
field() { awk -v k="$2" '{ for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' <<<"$1"; }
median() {
	tr ' ' '\n' <<<"$*" | sort -g |
		awk '{ v[NR] = $1 } END {
			if (NR % 2) { print v[(NR + 1) / 2]; exit }
			m = (v[NR / 2] + v[NR / 2 + 1]) / 2
			if (m == int(m)) print m; else printf "%.2f\n", m
		}'
}

# pair_ratios A B FIELD: M[A.r.FIELD] / M[B.r.FIELD] for r = 1..REPS (runs
# next to each other in time, so a drift of the host's speed mostly cancels).
pair_ratios() {
	local r out=()
	for ((r = 1; r <= REPS; r++)); do
		out+=("$(awk -v a="${M[$1.$r.$3]}" -v b="${M[$2.$r.$3]}" 'BEGIN { printf "%.3f", a / b }')")
	done
	echo "${out[*]}"
}
minimum() { tr ' ' '\n' <<<"$*" | sort -g | awk 'NR == 1'; }

# --- ids ----------------------------------------------------------------------------
# The id of index i: six rounds of xorshift32 from i xor 0x5bd1e995, each
# printed as 8 hex digits: resp_ + 48 hex like a real id, a bijection (no two
# indexes share an id), made from the index alone (no id file to load).
id_of() {
	local x=$(($1 ^ 0x5bd1e995)) k id=resp_
	for ((k = 0; k < 6; k++)); do
		x=$(((x ^ (x << 13)) & 0xffffffff))
		x=$((x ^ (x >> 17)))
		x=$(((x ^ (x << 5)) & 0xffffffff))
		printf -v id '%s%08x' "$id" "$x"
	done
	echo "$id"
}
write_ids_lua() {  # FILE: the same id_of() for wrk's LuaJIT
	cat >"$1" <<'EOF'
local bit = require("bit")
local bxor, lshift, rshift, tohex = bit.bxor, bit.lshift, bit.rshift, bit.tohex
function id_of(i)
	local x = bxor(i, 0x5bd1e995)
	local p = {}
	for k = 1, 6 do
		x = bxor(x, lshift(x, 13))
		x = bxor(x, rshift(x, 17))
		x = bxor(x, lshift(x, 5))
		p[k] = tohex(x, 8)
	end
	return "resp_" .. table.concat(p)
end
EOF
}

# --- upstream: nginx making up a Response for any id -------------------------------
# start_upstream PORT -> NGINX_PID, UP_URL, UP_BODY_BYTES. One worker, pinned to
# LOAD_CPU. The body is bench/run's Response with the id put in by nginx
# (${rid} from the location's regex), its text padded to BODY_SIZE bytes in
# all. JSON has no single quote and no '$': it goes verbatim into a
# single-quoted nginx string. /nginx_status counts requests (stub_status).
start_upstream() {
	local port=$1 body user_line="" code i id0
	mkdir -p "$TMP/nginx"
	body=$(awk -v target="$BODY_SIZE" '
	BEGIN {
		lorem = "Silent circuits hum, thoughts emerge in data streams, digital dawn breaks. " \
			"The cache remembers what the model once said, and answers again without asking. " \
			"Every finished response is immutable, so a copy kept close is never stale. "
		pre = "{\n  \"id\": \"${rid}\",\n  \"object\": \"response\",\n  \"created_at\": 1741386163,\n" \
			"  \"status\": \"completed\",\n  \"completed_at\": 1741386164,\n  \"error\": null,\n" \
			"  \"incomplete_details\": null,\n  \"instructions\": null,\n  \"max_output_tokens\": null,\n" \
			"  \"model\": \"gpt-4o-2024-08-06\",\n  \"output\": [\n    {\n      \"type\": \"message\",\n" \
			"      \"id\": \"msg_${rid}\",\n      \"status\": \"completed\",\n      \"role\": \"assistant\",\n" \
			"      \"content\": [\n        {\n          \"type\": \"output_text\",\n          \"text\": \""
		suf = "\",\n          \"annotations\": []\n        }\n      ]\n    }\n  ],\n" \
			"  \"parallel_tool_calls\": true,\n  \"previous_response_id\": null,\n" \
			"  \"reasoning\": {\n    \"effort\": null,\n    \"summary\": null\n  },\n  \"store\": true,\n" \
			"  \"temperature\": 1.0,\n  \"text\": {\n    \"format\": {\n      \"type\": \"text\"\n    }\n  },\n" \
			"  \"tool_choice\": \"auto\",\n  \"tools\": [],\n  \"top_p\": 1.0,\n  \"truncation\": \"disabled\",\n" \
			"  \"usage\": {\n    \"input_tokens\": 32,\n    \"input_tokens_details\": {\n      \"cached_tokens\": 0,\n" \
			"      \"cache_write_tokens\": 0\n    },\n    \"output_tokens\": 618,\n" \
			"    \"output_tokens_details\": {\n      \"reasoning_tokens\": 0\n    },\n" \
			"    \"total_tokens\": 650\n  },\n  \"user\": null,\n  \"metadata\": {}\n}\n"
		need = target - (length(pre) + length(suf) + 2 * (53 - 6))  # ${rid}: 6 chars -> 53
		pad = lorem
		while (length(pad) < need) pad = pad lorem
		text = substr(pad, 1, need)
		sub(/ +$/, ".", text)
		printf "%s%s%s", pre, text, suf
	}')
	[[ $(id -u) != 0 ]] || user_line="user root;"
	cat >"$TMP/nginx/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_timeout 300s;
	keepalive_requests 100000000;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	server {
		listen 127.0.0.1:$port;
		location = /nginx_status { stub_status; }
		location ~ "^/v1/responses/(?<rid>resp_[0-9a-f]{1,64})\$" {
			default_type application/json;
			return 200 '$body';
		}
		location / { return 404; }
	}
}
EOF
	NGINX_ARGS=(-p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf")
	nginx "${NGINX_ARGS[@]}" -t >"$TMP/nginx/test.log" 2>&1 || die "nginx -t: $(cat "$TMP/nginx/test.log")"
	taskset -c "$LOAD_CPU" nginx "${NGINX_ARGS[@]}" >"$TMP/nginx/stdout.log" 2>&1 &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	UP_URL=http://127.0.0.1:$port
	id0=$(id_of 0)
	for ((i = 0; i < 50; i++)); do
		code=$(curl -s -o "$TMP/nginx/sample" -w '%{http_code}' --max-time 1 "$UP_URL/v1/responses/$id0" 2>/dev/null) || true
		[[ $code == 200 ]] && break
		kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx/error.log" "$TMP/nginx/stdout.log")"
		sleep 0.1
	done
	[[ $code == 200 ]] || die "nginx did not answer on $UP_URL"
	grep -q "\"id\": \"$id0\"" "$TMP/nginx/sample" || die "the upstream's body does not carry the id $id0"
	UP_BODY_BYTES=$(wc -c <"$TMP/nginx/sample")
	log "upstream nginx $NGINX_PID on $UP_URL (CPU $LOAD_CPU), bodies of $UP_BODY_BYTES bytes"
}
upstream_requests() {  # requests nginx has handled, this one included
	curl -s --max-time 2 "$UP_URL/nginx_status" | awk 'NR == 3 { print $3 }'
}

# --- respcache ------------------------------------------------------------------------
# start_rc NAME PORT WORKERS CPUS: a daemon with the config TMP/NAME/respcache.conf
# (the caller writes it) and the cache TMP/NAME/cache; CPUS is a taskset CPU
# list or "all". -> RC_PID[NAME], RC_URL[NAME]. Its stderr: TMP/NAME/stderr.
declare -A RC_PID RC_URL RC_START_S RC_STOP_S
# shellcheck disable=SC2034  # the scripts read RC_URL
start_rc() {
	local name=$1 port=$2 workers=$3 cpus=$4 pid i pin=() t0 limit
	# ./configure --enable-sanitizers (the test build) costs each hit 2x.
	if ldd "$RESPCACHE" 2>/dev/null | grep -Eq 'lib(a|t)san'; then
		log "WARNING: $RESPCACHE is a sanitizer build: its figures are not" \
		    "respcache's; build with ./configure (no --enable-sanitizers)" \
		    "or set RESPCACHE="
	fi
	mkdir -p "$TMP/$name/cache"
	[[ $cpus == all ]] || pin=(taskset -c "$cpus")
	: >"$TMP/$name/stderr.now"
	"${pin[@]}" "$RESPCACHE" --config "$TMP/$name/respcache.conf" \
		--listen "127.0.0.1:$port" --upstream "$UP_URL" --cache-dir "$TMP/$name/cache" \
		--workers "$workers" --admin-listen "" >>"$TMP/$name/stdout" 2>"$TMP/$name/stderr.now" &
	pid=$!
	PIDS+=("$pid")
	# It checks the whole cache file before it listens (in a child: 10 s
	# at most, and a second more per 50 MB): give it that and some.
	t0=$(date +%s%N)
	limit=$((100 + 20 * $(du -sm "$TMP/$name/cache" | awk '{ print $1 }') / 50))
	for ((i = 0; i < limit * 10; i++)); do
		grep -q "listening on 127.0.0.1:$port" "$TMP/$name/stderr.now" && break
		kill -0 "$pid" 2>/dev/null || die "respcache ($name) exited: $(tail -n 5 "$TMP/$name/stderr.now")"
		sleep 0.1
	done
	grep -q "listening on 127.0.0.1:$port" "$TMP/$name/stderr.now" ||
		die "respcache ($name) not listening after $limit s: $(tail -n 5 "$TMP/$name/stderr.now")"
	RC_PID[$name]=$pid RC_URL[$name]=http://127.0.0.1:$port
	RC_START_S[$name]=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	log "respcache ($name, $workers worker(s), CPUs $cpus) pid $pid on http://127.0.0.1:$port, listening after ${RC_START_S[$name]} s"
}
# stop_rc NAME: SIGTERM (it drains, syncs the cache, exits); it must be gone
# within 120 s. -> RC_STOP_S[NAME]
# shellcheck disable=SC2034  # the scripts read RC_STOP_S
stop_rc() {
	local t0
	t0=$(date +%s%N)
	stop_proc "${RC_PID[$1]}" TERM 120 "respcache ($1)" || die "respcache ($1) did not stop within 120 s of SIGTERM"
	RC_STOP_S[$1]=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	cat "$TMP/$1/stderr.now" >>"$TMP/$1/stderr"
}

# --- hit runs ----------------------------------------------------------------------
# write_hit_lua FILE: wrk script, every request GET /v1/responses/ID of a
# uniformly random index of BENCH_N. The id is made per request (~1 µs of
# wrk's CPU): 1M pre-formatted requests would cost wrk ~200 MB and seconds
# per thread. done() prints a BENCH line (latencies in µs).
write_hit_lua() {
	cat >"$1" <<'EOF'
dofile(os.getenv("BENCH_LUA_IDS"))
local n = tonumber(os.getenv("BENCH_N"))
local seed = tonumber(os.getenv("BENCH_SEED") or "1")
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local t = 0
function setup(thread)
	thread:set("tid", t)
	t = t + 1
end
local random, format = math.random, wrk.format
function init(args)
	math.randomseed(seed * 7919 + (tid or 0) * 104729 + n)
end
function request()
	return format("GET", "/v1/responses/" .. id_of(random(0, n - 1)))
end
function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50=%d p90=%d p99=%d max=%d\n",
		summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
		latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
EOF
}

# hit_run KEY URL PID N: WARMUP s of wrk unrecorded, then DURATION s with
# --latency (THREADS, CONNECTIONS, on LOAD_CPU) over ids 0..N-1 ->
# M[KEY.rps|p50|p99|errors|upstream|proc_us|core_us|core_pct|minflt]. Needs
# TMP/hit.lua, BENCH_LUA_IDS, BENCH_AUTH exported, and the upstream.
declare -A M
hit_run() {
	local k=$1 url=$2 pid=$3 n=$4 out wpid p0 p1 j0 j1 u0 u1 line reqs a0 a1 f0 f1 b0 b1 i0 i1 x
	out=$TMP/wrk.$k.out
	if ((WARMUP > 0)); then
		BENCH_N=$n taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${WARMUP}s" \
			-s "$TMP/hit.lua" "$url" >"$out.warmup" 2>&1 || { cat "$out.warmup" >&2; die "warmup wrk failed ($k)"; }
	fi
	M[$k.probe]=$(cpu_probe)
	u0=$(upstream_requests)
	p0=$(proc_stat "$pid") j0=$(cpu_jiffies "$SRV_CPU")
	BENCH_N=$n taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency \
		-s "$TMP/hit.lua" "$url" >"$out" 2>&1 &
	wpid=$!
	PIDS+=("$wpid")
	wait "$wpid" || { cat "$out" >&2; die "wrk failed ($k)"; }
	forget_pid "$wpid"
	p1=$(proc_stat "$pid") j1=$(cpu_jiffies "$SRV_CPU")
	u1=$(upstream_requests)
	kill -0 "$pid" 2>/dev/null || die "respcache (pid $pid) died during the run ($k)"
	[[ -z ${VERBOSE:-} ]] || sed 's/^/    /' "$out" >&2
	line=$(grep '^BENCH ' "$out" | tail -n1) || true
	[[ -n $line ]] || { cat "$out" >&2; die "no BENCH line from wrk ($k)"; }
	reqs=$(field "$line" requests)
	((reqs > 0)) || die "no request completed ($k)"
	read -r a0 f0 x <<<"$p0"
	read -r a1 f1 x <<<"$p1"
	read -r b0 i0 <<<"$j0"
	read -r b1 i1 <<<"$j1"
	M[$k.reqs]=$reqs
	M[$k.rps]=$(awk -v r="$reqs" -v d="$(field "$line" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
	M[$k.p50]=$(field "$line" p50) M[$k.p99]=$(field "$line" p99)
	M[$k.errors]=$(($(field "$line" non2xx) + $(field "$line" connect) + $(field "$line" read) + $(field "$line" write) + $(field "$line" timeout)))
	M[$k.upstream]=$((u1 - u0 - 1))
	M[$k.proc_us]=$(us_per $((a1 - a0)) "$reqs")
	M[$k.core_us]=$(us_per $((b1 - b0)) "$reqs")
	M[$k.core_pct]=$(awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f", (b + i) ? 100 * b / (b + i) : 0 }')
	M[$k.minflt]=$(awk -v f=$((f1 - f0)) -v r="$reqs" 'BEGIN { printf "%.3f", f / r }')
}
# cpu_probe: wall ms of a fixed CPU loop on SRV_CPU (as ../shared/bench does).
# It moves when the VM's CPU gets slower under us (other tenants, an SMT
# sibling, the host): then every figure of the run that follows moves too.
cpu_probe() {
	local t0 t1
	t0=$(date +%s%N)
	taskset -c "$SRV_CPU" awk 'BEGIN { for (i = 0; i < 3000000; i++) s += i; exit }'
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}

# shared KEY: did SRV_CPU do other work during the run (busy > 1.05 x the daemon's CPU)?
shared() { awk -v c="${M[$1.core_us]}" -v p="${M[$1.proc_us]}" 'BEGIN { exit !(c > 1.05 * p) }'; }
hit_summary() {  # KEY: one line for the log
	local k=$1
	echo "${M[$k.rps]} req/s, p50 ${M[$k.p50]} µs, p99 ${M[$k.p99]} µs; CPU/hit ${M[$k.proc_us]} µs (process), ${M[$k.core_us]} µs (CPU $SRV_CPU, ${M[$k.core_pct]}% busy); ${M[$k.minflt]} page faults/hit; upstream +${M[$k.upstream]}, errors ${M[$k.errors]}; probe ${M[$k.probe]} ms"
}
