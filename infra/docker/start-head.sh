#!/usr/bin/env bash
# Ray head for the compose deployment: start Ray, deploy serve_config.yaml, stay in the foreground.
# The head offers CPUs (ingress, face analysis) and no GPU; GPU workers join it (see docker-compose.yml).
# `serve deploy` is declarative: run it again with a changed config for a rolling update.
# RAY_AUTH_MODE/RAY_AUTH_TOKEN (from the environment) are read by `ray start` and `serve deploy` alike.
set -euo pipefail

# One GPU on the host: the generator and the identity encoder share it, each capped to its share of
# GPU memory (graph.py's single-gpu profile, serve_config.single_gpu.yaml).
if [ "${KISSGEN_SINGLE_GPU:-0}" = "1" ]; then
  SERVE_CONFIG="${SERVE_CONFIG:-/app/serve_config.single_gpu.yaml}"
else
  SERVE_CONFIG="${SERVE_CONFIG:-/app/serve_config.yaml}"
fi

ray start --head \
  --port=6379 \
  --num-cpus="${RAY_HEAD_NUM_CPUS:-8}" \
  --num-gpus=0 \
  --dashboard-host=0.0.0.0 \
  --metrics-export-port=8080 \
  --disable-usage-stats

# The Serve REST API is up once the dashboard answers.
for _ in $(seq 1 60); do
  curl -fsS -H "Authorization: Bearer ${RAY_AUTH_TOKEN:-}" http://127.0.0.1:8265/api/version >/dev/null 2>&1 && break
  sleep 2
done
serve deploy "$SERVE_CONFIG" --address http://127.0.0.1:8265

# Stay up while the local raylet lives; if it dies the container exits and compose restarts it.
while ray status --address 127.0.0.1:6379 >/dev/null 2>&1; do
  sleep 15
done
echo "ray head stopped" >&2
exit 1
