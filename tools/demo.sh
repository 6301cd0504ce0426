#!/usr/bin/env bash
# The main job (README): set up the kernel lab and run an end-to-end
# attach -> verify -> I/O -> detach -> leftover audit with the brick-agent command
# against real LIO iSCSI (CHAP) and nvmet NVMe/TCP targets in a real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-venv.sh
bash tools/kernel-lab/lab setup
exec bash tools/kernel-lab/lab run --timeout "${BRICK_LAB_TIMEOUT:-900}" -- .venv/bin/python tools/demo.py
