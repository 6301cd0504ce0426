#!/usr/bin/env bash
# brick_agent vs os-brick in the kernel lab: one command.
#   tools/bench/bench_compare.sh [bench_compare.py args, e.g. -n 7 --sections latency]
# Sets up .venv (ours) and an os-brick venv in /var/tmp/brick-bench (visible in the guest),
# runs the synthetic-tree discovery on the host, then everything else in the lab VM.
# Output: stdout, and /var/tmp/brick-bench/last-{host,lab}.{txt,json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
out=${BRICK_BENCH_DIR:-/var/tmp/brick-bench}
venv=$out/osbrick-venv
mkdir -p "$out"
tools/setup-venv.sh
if ! "$venv/bin/python" -c 'import os_brick' 2>/dev/null; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q os-brick${OS_BRICK_VERSION:+==$OS_BRICK_VERSION}
fi
if [ "${BRICK_BENCH_SKIP_SYNTHETIC:-0}" != 1 ]; then
  .venv/bin/python tools/bench/bench_compare.py --synthetic --osbrick-python "$venv/bin/python" \
    --json-out "$out/last-host.json" | tee "$out/last-host.txt"
fi
# (the guest's /var/tmp is a throw-away overlay: results come back through stdout)
tools/kernel-lab/lab run --timeout 900 -- .venv/bin/python tools/bench/bench_compare.py \
  --osbrick-python "$venv/bin/python" "$@" | tee "$out/last-lab.txt"
sed -n 's/^BENCH_JSON //p' "$out/last-lab.txt" > "$out/last-lab.json"
echo "table again: .venv/bin/python tools/bench/bench_compare.py --render $out/last-lab.json"
