#!/bin/bash
# Host x86 instructions per exit round trip (see exit-insns.js). Needs valgrind.
#   scripts/exit-insns.sh [vmx|svm] [op] [repository root]
set -e
B=${1:-vmx}; OP=${2:-cpuid}; R=${3:-$(cd "$(dirname "$0")/.." && pwd)}; N=${N:-50000}
count() {
  B=$B R=$R valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null --smc-check=all-non-file \
    node --predictable --random-seed=1 --single-threaded --expose-gc "$(dirname "$0")/exit-insns.js" "$1" "$OP" 2>&1 |
    grep "I *refs" | sed 's/.*refs: *//; s/,//g'
}
a=$(count "$N"); b=$(count $((2 * N)))
echo "$B $OP: $(( (b - a) / N )) host instructions per exit"
