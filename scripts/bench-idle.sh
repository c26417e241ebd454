#!/usr/bin/env bash
# The idle cost of `keyrot run`: resident memory, CPU time and wake-ups over a quiet period, with a
# plan whose next event (its scheduled rotation) is hours away and the metrics endpoint on.
#
# Builds keyrot in release mode (several minutes the first time), runs the daemon on a sandbox
# plan in a temporary directory, and samples /proc before and after the period. Wake-ups are
# counted as context switches of all the daemon's threads: each time a sleeping thread runs again
# is one switch.
#
# Usage: scripts/bench-idle.sh [SECONDS] [METRICS_PORT]    (defaults: 60 and 19464)
#        KEYROT=/usr/local/bin/keyrot scripts/bench-idle.sh   (measure that binary, build nothing)
#        SIGNER=1 scripts/bench-idle.sh   (the daemon in signer mode: it also serves the external
#                                          JWT signer on a unix socket)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
port=${2:-19464}

if [ -n "${KEYROT:-}" ]; then
    keyrot=$KEYROT
else
    cargo build --release --bin keyrot
    keyrot=$PWD/target/release/keyrot
fi

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

restart=none
signer=
if [ -n "${SIGNER:-}" ]; then
    restart=externalSigner
    signer='signer: { socket: signer.sock }'
fi

# Daily at the hour six hours from now (UTC): nothing is due during the measurement.
hour=$(date -u -d '+6 hours' +%-H)
cat > "$work/plan.yaml" <<PLAN
cluster: bench
flavour: custom
testPlan: true
key: { algorithm: ES256 }
stateDir: state
privateKeyDir: keys
apiserver:
  verificationKeyFile: pki/sa.pub
  signingKeyFile: pki/sa.key
  restart: $restart
probe: none
issuer: { url: "https://issuer.example.com/bench" }
targets: [{ name: www, localDirectory: www, cacheMaxAge: 1s }]
schedule: { cron: "0 0 $hour * * *" }
timings: { publishSettle: 1s, retireAfter: 1s }
metrics: { listen: "127.0.0.1:$port" }
$signer
PLAN

"$keyrot" init -c "$work/plan.yaml" > /dev/null
"$keyrot" run -c "$work/plan.yaml" 2> "$work/log" &
pid=$!
for _ in $(seq 50); do
    grep -q 'waiting \[schedule\]' "$work/log" && break
    sleep 0.1
done
grep -q 'waiting \[schedule\]' "$work/log" || { cat "$work/log"; exit 1; }
# One scrape, so the metrics thread has served once before the quiet period.
curl -fsS "http://127.0.0.1:$port/metrics" > /dev/null 2>&1 || true

ticks=$(getconf CLK_TCK)
# utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
switches() {
    cat /proc/"$pid"/task/*/status |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }'
}
# Resident memory in KiB: all of it, then the part that is the process's own (heap, stacks) and
# the part that is mapped file pages (the binary, shared and reclaimable).
rss_kib() { awk -v field="$1" '$1 == field ":" { print $2 }' "/proc/$pid/status"; }

cpu_before=$(cpu_ticks)
switches_before=$(switches)
sleep "$seconds"
cpu_after=$(cpu_ticks)
switches_after=$(switches)
rss=$(rss_kib VmRSS)
rss_anon=$(rss_kib RssAnon)
rss_file=$(rss_kib RssFile)
threads=$(ls /proc/"$pid"/task | wc -l)

cpu_ms=$(( (cpu_after - cpu_before) * 1000 / ticks ))
printf '%s run%s, idle for %s s (next event hours away)\n' "$keyrot" \
    "${SIGNER:+ in signer mode}" "$seconds"
printf '  threads            %s\n' "$threads"
printf '  resident memory    %s KiB (%s KiB anonymous, %s KiB file pages of the binary)\n' \
    "$rss" "$rss_anon" "$rss_file"
printf '  CPU time           %s ms (user + system, %s ticks per second)\n' "$cpu_ms" "$ticks"
printf '  wake-ups           %s context switches over all threads\n' "$((switches_after - switches_before))"
