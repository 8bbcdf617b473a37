#!/usr/bin/env bash
# Runs the README's "Tutorial by hand" exactly as written: every ```bash block of that section, in
# order, in one bash process with `set -euo pipefail`, from the repository root. Only the environment
# differs from a person's run: TUT is a fresh temporary directory, KAFKA_PORT=0 (a free broker port)
# and REST_PORT a free port, so the test never collides with a broker or worker already running here.
# Fails when any command fails or when the whole run exceeds TUTORIAL_TIMEOUT seconds (default 300).
# Everything it started is stopped at the end (by the PIDs the tutorial records, and the broker's PID file).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TUT="$(mktemp -d "${TMPDIR:-/tmp}/iotconnect-tutorial.XXXXXX")"
script="$TUT/tutorial.sh"
body="$(awk '/^## Tutorial by hand/{on=1; next} on && /^## /{on=0}
             on && /^```bash$/{code=1; next} on && code && /^```$/{code=0; print ""; next} on && code {print}' README.md)"
[ -n "$body" ] || { echo "test-tutorial: no \`\`\`bash blocks under '## Tutorial by hand' in README.md" >&2; exit 1; }
{ echo 'set -euo pipefail'; echo 'set -x'; printf '%s\n' "$body"; } >"$script"

cleanup() {
  local rc=$?
  for f in "$TUT"/*.pid; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  KAFKA_DATA_DIR="$TUT/broker" "$ROOT/scripts/kafka-broker.sh" stop >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    echo "test-tutorial: FAILED (exit $rc); the commands' trace is above, files kept in $TUT" >&2
    for log in "$TUT"/*.log; do [ -f "$log" ] && { echo "--- $log (last 30 lines)"; tail -30 "$log"; }; done >&2
  else
    rm -rf "$TUT"
  fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rest_port="$(free_port)"
echo "test-tutorial: $(grep -c . "$script") lines of README commands, TUT=$TUT, REST_PORT=$rest_port"
t0=$SECONDS
TUT="$TUT" KAFKA_PORT=0 REST_PORT="$rest_port" timeout --foreground "${TUTORIAL_TIMEOUT:-300}" \
  bash "$script" >"$TUT/run.out" 2>"$TUT/trace.log" || { cat "$TUT/run.out"; tail -40 "$TUT/trace.log"; exit 1; }
tail -5 "$TUT/run.out" | sed 's/^/  /'
echo "test-tutorial: ok ($((SECONDS - t0)) s)"
