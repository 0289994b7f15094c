#!/bin/sh
# Check the node role on a machine with an NVIDIA GPU and driver: runs the agent against the real
# libnvidia-ml.so.1, prints its GPU series, checks their ranges, measures CPU per poll and steady CPU.
# At most about 2 minutes. `benchmarks/gpu_check.sh --stub 8` does the same against the stub library.
set -eu
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec timeout 300 "$PY" -m exporter.pack.gpu_check "$@"
