#!/usr/bin/env bash
# Create <repo>/.venv with brick_agent (editable) and its test extras; quick no-op when current.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
stamp=.venv/.brick-agent-installed
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$stamp" -nt setup.cfg ]; then
  exit 0
fi
"$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
touch "$stamp"
