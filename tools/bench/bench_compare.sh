#!/usr/bin/env bash
# brick_agent vs os-brick in the kernel lab: one command.
#   tools/bench/bench_compare.sh [bench_compare.py args, e.g. -n 7 --daemon]
#   BENCH_SECTIONS=latency,scale tools/bench/bench_compare.sh    # which sections
# Sets up .venv (ours) and an os-brick venv in /var/tmp/brick-bench (visible in the guest),
# runs the synthetic-tree discovery on the host, then each section in its own lab VM run
# (its own time budget, bench_compare.BUDGETS, and VM timeout): a section that runs out
# of time or kills its VM keeps the rows it printed, and the next section still runs.
# BENCH_ONE_VM=1: all sections in one VM run (less boot time, no isolation).
# Output: stdout, /var/tmp/brick-bench/last-{host,lab}.{txt,json}, last-lab-<section>.*.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
out=${BRICK_BENCH_DIR:-/var/tmp/brick-bench}
venv=$out/osbrick-venv
sections=${BENCH_SECTIONS:-latency,concurrency,concurrency-nvme,failures,discovery,scale,fill-iscsi,fill-nvme}
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

# the last complete result a run printed (the final one, else the last section's partial)
last_json() {
  { grep '^BENCH_JSON ' "$1" || grep '^BENCH_JSON_PARTIAL ' "$1" || true; } | tail -1 |
    sed 's/^BENCH_JSON[A-Z_]* //'
}

# a section's budget: the last --budget SECTION=SECONDS among the arguments, else BUDGETS
budget_of() {
  local sec=$1 budget="" prev=""
  shift
  for arg in "$@"; do
    case "$prev:$arg" in
      --budget:"$sec"=*) budget=${arg#*=} ;;
      *:--budget="$sec"=*) budget=${arg#--budget="$sec"=} ;;
    esac
    prev=$arg
  done
  if [ -n "$budget" ]; then
    printf '%.0f\n' "$budget"
    return
  fi
  .venv/bin/python -c "import sys; sys.path.insert(0, 'tools/bench'); import bench_compare as b
print(int(b.BUDGETS.get('$sec', 600)))"
}

# (the guest's /var/tmp is a throw-away overlay: results come back through stdout)
if [ "${BENCH_ONE_VM:-0}" = 1 ]; then
  tools/kernel-lab/lab run --timeout 1800 -- .venv/bin/python tools/bench/bench_compare.py \
    --osbrick-python "$venv/bin/python" --sections "$sections" "$@" | tee "$out/last-lab.txt" || true
  last_json "$out/last-lab.txt" > "$out/last-lab.json"
  jsons=("$out/last-lab.json")
else
  jsons=()
  for sec in ${sections//,/ }; do
    budget=$(budget_of "$sec" "$@")
    # its own VM: the dense host's devices need no removal (minutes under TCG)
    tools/kernel-lab/lab run --timeout $((budget + 120)) -- .venv/bin/python \
      tools/bench/bench_compare.py --osbrick-python "$venv/bin/python" --sections "$sec" \
      --budget "$sec=$budget" --no-dense-teardown "$@" | tee "$out/last-lab-$sec.txt" || true
    last_json "$out/last-lab-$sec.txt" > "$out/last-lab-$sec.json"
    if [ -s "$out/last-lab-$sec.json" ]; then
      jsons+=("$out/last-lab-$sec.json")
    else
      echo "!! section $sec printed no result (see $out/last-lab-$sec.txt)" >&2
    fi
  done
fi
if [ ${#jsons[@]} -gt 0 ]; then
  .venv/bin/python tools/bench/bench_compare.py --render "${jsons[@]}" | tee "$out/last-lab.txt"
  echo "table again: .venv/bin/python tools/bench/bench_compare.py --render ${jsons[*]}"
fi
