#!/usr/bin/env bash
# Nova's (and optionally Cinder's) own unit tests against brick_agent's os-brick compat layer.
#
# From a fresh machine with python3 (>= 3.11) and pip access to PyPI:
#   1. builds a virtualenv (NOVA_VENV, default .venv-nova) with pinned nova==34.0.0 and
#      os-brick==7.1.1, Nova's test dependencies, and brick_agent (editable, this checkout);
#   2. runs the tests with plain os-brick (baseline: BRICK_AGENT_OS_BRICK_COMPAT=0);
#   3. turns the layer on the way an operator would — `brick-agent os-brick-compat install`
#      in that venv — and runs the same tests again.
# Each run first proves its mode (tools/compat/run_tests.py checks the factory's iSCSI class).
# Exit status is non-zero if a test fails with the layer on that passes without it (or, with
# --no-baseline, if any test fails with the layer on).
#
# Usage: tools/compat/run-nova-tests.sh [--broad] [--cinder] [--no-baseline] [--keep-enabled]
#   --broad         also Nova's libvirt driver, block_device, virt_drivers and nova-manage tests
#   --cinder        also Cinder 29.0.0's tests that build or use os-brick connectors
#                   (own venv, CINDER_VENV, default .venv-cinder)
#   --no-baseline   skip the runs without the layer
#   --keep-enabled  leave the .pth in the venvs afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
py=${PYTHON:-python3}
NOVA_VENV=${NOVA_VENV:-$repo/.venv-nova}
CINDER_VENV=${CINDER_VENV:-$repo/.venv-cinder}
broad=0 cinder=0 baseline=1 keep=0
for arg in "$@"; do
  case $arg in
    --broad) broad=1 ;;
    --cinder) cinder=1 ;;
    --no-baseline) baseline=0 ;;
    --keep-enabled) keep=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# SQLAlchemy 2.1 deprecates noload(), which Nova 34 and Cinder 29 still use; their test
# fixtures turn that warning into errors (44 of Nova's --broad tests, with or without the layer).
PINS=(os-brick==7.1.1 "SQLAlchemy<2.1")
TEST_DEPS=(ddt fixtures oslotest stestr testtools testscenarios testresources requests-mock
           PyMySQL)

NOVA_TESTS=(
  nova.tests.unit.virt.libvirt.volume.test_iscsi
  nova.tests.unit.virt.libvirt.volume.test_nvme
  nova.tests.unit.virt.libvirt.volume.test_fibrechannel
  nova.tests.unit.virt.libvirt.volume.test_volume
  nova.tests.unit.virt.libvirt.volume.test_iser
)
NOVA_BROAD=(
  nova.tests.unit.virt.libvirt.test_driver
  nova.tests.unit.virt.test_block_device
  nova.tests.unit.virt.test_virt_drivers
  nova.tests.unit.cmd.test_manage
)
CINDER_TESTS=(
  cinder.tests.unit.test_utils
  cinder.tests.unit.volume.drivers.test_spdk
  cinder.tests.unit.volume.drivers.dell_emc.powermax.test_powermax_nvme_tcp
  cinder.tests.unit.volume.test_driver
  cinder.tests.unit.volume.test_volume
  cinder.tests.unit.volume.test_volume_migration
  cinder.tests.unit.volume.flows.test_create_volume_flow
  cinder.tests.unit.backup.test_backup
)

make_venv() {  # venv, packages...
  local venv=$1; shift
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q "$@" "${PINS[@]}" "${TEST_DEPS[@]}"
  "$venv/bin/python" -m pip install -q -e "$repo"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()

run() {  # venv, label, expect, modules...
  local venv=$1 label=$2 expect=$3; shift 3
  local env_flag=()
  [ "$expect" = off ] && env_flag=(BRICK_AGENT_OS_BRICK_COMPAT=0)
  echo "== $label, compat $expect" >&2
  local out last rc=0
  out=$(cd "$work" && env "${env_flag[@]}" "$venv/bin/python" "$repo/tools/compat/run_tests.py" \
          --expect "$expect" --label "$label" "$@" 2>"$work/$label-$expect.log") || rc=$?
  last=$(printf '%s\n' "$out" | tail -1)
  if [ "${last:0:1}" != "{" ]; then      # no summary: the run itself broke (or wrong mode)
    tail -20 "$work/$label-$expect.log" >&2
    last="{\"label\": \"$label\", \"compat\": \"$expect\", \"ran\": 0, \"passed\": 0,"
    last+=" \"failures\": 0, \"errors\": 1, \"skipped\": 0, \"seconds\": 0,"
    last+=" \"failed_tests\": [\"(the $label run did not complete, rc $rc)\"]}"
  fi
  echo "$last"
  results+=("$last")
  return $rc
}

regressions() {  # json of the run with the layer, json of the baseline (or "")
  "$py" - "$1" "$2" <<'PY'
import json, sys
on = json.loads(sys.argv[1])
off = json.loads(sys.argv[2]) if sys.argv[2] else {"failed_tests": []}
new = sorted(set(on["failed_tests"]) - set(off["failed_tests"]))
for test in new:
    print(f"  fails only with the layer: {test}", file=sys.stderr)
for test in sorted(set(on["failed_tests"]) & set(off["failed_tests"])):
    print(f"  fails with and without the layer: {test}", file=sys.stderr)
sys.exit(1 if new else 0)
PY
}

suite() {  # venv, label, modules...
  local venv=$1 label=$2; shift 2
  local off_json="" on_json
  "$venv/bin/brick-agent" os-brick-compat uninstall >/dev/null
  if [ $baseline = 1 ]; then
    run "$venv" "$label" off "$@" || true
    off_json=${results[-1]}
  fi
  "$venv/bin/brick-agent" os-brick-compat install >/dev/null
  run "$venv" "$label" on "$@" || true
  on_json=${results[-1]}
  [ $keep = 1 ] || "$venv/bin/brick-agent" os-brick-compat uninstall >/dev/null
  regressions "$on_json" "$off_json"
}

echo "== building $NOVA_VENV" >&2
make_venv "$NOVA_VENV" nova==34.0.0 python-barbicanclient osprofiler wsgi-intercept
modules=("${NOVA_TESTS[@]}")
[ $broad = 1 ] && modules+=("${NOVA_BROAD[@]}")
failed=0
suite "$NOVA_VENV" nova "${modules[@]}" || failed=1

if [ $cinder = 1 ]; then
  echo "== building $CINDER_VENV" >&2
  make_venv "$CINDER_VENV" cinder==29.0.0
  suite "$CINDER_VENV" cinder "${CINDER_TESTS[@]}" || failed=1
fi

echo >&2
echo "label         compat  ran   passed  failures  errors  skipped  seconds" >&2
for r in "${results[@]}"; do
  "$py" -c 'import json, sys; print("{label:<13} {compat:<7} {ran:<5} {passed:<7} {failures:<9} {errors:<7} {skipped:<8} {seconds}".format(**json.loads(sys.argv[1])))' "$r" >&2
done
exit $failed
