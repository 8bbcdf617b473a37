#!/usr/bin/env bash
# Prints the chaos suite's report (target/chaos-report.tsv, one row per scenario run) as a table.
set -euo pipefail
report="${1:-target/chaos-report.tsv}"
[ -s "$report" ] || { echo "no chaos report at $report"; exit 0; }
printf '%-52s %6s %8s %5s %10s %8s\n' scenario reps items lost duplicates seconds
awk -F'\t' '{ printf "%-52s %6s %8s %5s %10s %8s\n", $1, $2, $3, $4, $5, $6 }' "$report"
