#!/usr/bin/env bash
# Run a command beside a local `vllm serve` on this machine's GPU(s), for as long as the command runs.
#   VLLM_MODEL   model to serve (hub id or folder); empty: no server, the command gets the GPU (training)
#   VLLM_PORT    default 8000; the factory's generator base_url is then http://127.0.0.1:8000/v1
#   VLLM_ARGS    extra `vllm serve` arguments, e.g. "--gpu-memory-utilization 0.9 --max-model-len 8192"
set -euo pipefail
if [[ -n "${VLLM_MODEL:-}" ]]; then
  port="${VLLM_PORT:-8000}"
  # shellcheck disable=SC2086
  vllm serve "$VLLM_MODEL" --host 127.0.0.1 --port "$port" ${VLLM_ARGS:-} &
  vllm_pid=$!
  trap 'kill "$vllm_pid" 2>/dev/null || true' EXIT
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    kill -0 "$vllm_pid" 2>/dev/null || { echo "vllm serve exited" >&2; exit 1; }
    sleep 5
  done
fi
"$@"
