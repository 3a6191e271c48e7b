#!/usr/bin/env bash
# Dev helper: user and system CPU ms per request of a proxy process under N requests at concurrency 32.
# usage: cpu-check.sh PID PORT [N] [unary|stream]
pid=$1; port=$2; n=${3:-10000}; mode=${4:-unary}
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
node --import tsx "$(dirname "$0")/prof-load.ts" http://127.0.0.1:$port $n 32 $mode >/dev/null
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
echo "user $(echo "scale=3; ($u1-$u0)*10/$n" | bc) sys $(echo "scale=3; ($s1-$s0)*10/$n" | bc) ms/req"
