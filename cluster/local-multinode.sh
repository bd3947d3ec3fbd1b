#!/usr/bin/env bash
# A two-node Ray cluster on this one machine, for trying multi-node placement and the Jobs API:
#   head:   4 CPUs, 0 GPUs, custom resource head_node=4
#   worker: 4 CPUs, 2 logical GPUs (Ray does not check them), custom resource worker_node=4
#
#   bash cluster/local-multinode.sh start     prints the addresses; clients need RAY_AUTH_MODE=token
#   bash cluster/local-multinode.sh stop      stops only this cluster's processes (not other Rays)
#
# Token auth stays on (Ray 2.60): the token is ~/.ray/auth_token (or $RAY_AUTH_TOKEN_PATH), made if
# missing. The dashboard, the Jobs API and the metrics endpoints bind to 127.0.0.1. Ports and the
# state folder are distinct from a default `ray.init()`, so a local Ray of the tests can run beside it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${RAYDA_MN_DIR:-/tmp/rayda-mn}
GCS=${RAYDA_MN_PORT:-6390}
DASH=${RAYDA_MN_DASHBOARD_PORT:-8275}
METRICS_HEAD=${RAYDA_MN_METRICS_HEAD:-8290}
METRICS_WORKER=${RAYDA_MN_METRICS_WORKER:-8291}
RAY=${RAY:-$HERE/.venv/bin/ray}
[ -x "$RAY" ] || RAY=ray
export RAY_AUTH_MODE=token
export PATH="$(dirname "$(command -v "$RAY")"):$PATH"   # the job entrypoint `rayda` resolves to the same install

ready() {  # ready N: wait until N nodes are alive
  for _ in $(seq 1 120); do
    n=$("$RAY" list nodes --address "127.0.0.1:$GCS" --filter "state=ALIVE" --format json 2>/dev/null \
        | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "$n" -ge "$1" ] && return 0
    sleep 1
  done
  echo "cluster did not reach $1 node(s); logs in $DIR" >&2; return 1
}

node() {  # node NAME ARGS...: one `ray start --block` in its own session, its pid in $DIR/NAME.pid
  local name=$1; shift
  setsid "$RAY" start --block --node-ip-address 127.0.0.1 --disable-usage-stats "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

case "${1:-}" in
  start)
    mkdir -p "$DIR"
    if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
      "$RAY" get-auth-token --generate >/dev/null
    fi
    node head --head --temp-dir "$DIR/tmp" --port "$GCS" --include-dashboard true \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASH" --ray-client-server-port 10011 \
      --metrics-export-port "$METRICS_HEAD" --dashboard-agent-listen-port 52401 --dashboard-agent-grpc-port 52411 \
      --runtime-env-agent-port 52421 --node-manager-port 52431 --object-manager-port 52441 \
      --min-worker-port 21000 --max-worker-port 21499 --num-cpus 4 --num-gpus 0 --resources '{"head_node": 4}'
    ready 1
    node worker --address "127.0.0.1:$GCS" --metrics-export-port "$METRICS_WORKER" \
      --dashboard-agent-listen-port 52402 --dashboard-agent-grpc-port 52412 --runtime-env-agent-port 52422 \
      --node-manager-port 52432 --object-manager-port 52442 --min-worker-port 21500 --max-worker-port 21999 \
      --num-cpus 4 --num-gpus 2 --resources '{"worker_node": 4}'
    ready 2
    echo "cluster up: GCS 127.0.0.1:$GCS, Jobs API and dashboard http://127.0.0.1:$DASH,"
    echo "metrics http://127.0.0.1:$METRICS_HEAD/metrics and http://127.0.0.1:$METRICS_WORKER/metrics (export RAY_AUTH_MODE=token)";;
  stop)
    for name in worker head; do
      [ -f "$DIR/$name.pid" ] || continue
      pid=$(cat "$DIR/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true   # `ray start --block` stops the processes it started
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$pid" 2>/dev/null || true   # anything left in that node's own session
      rm -f "$DIR/$name.pid"
    done
    echo "cluster stopped";;
  *) echo "usage: $0 start|stop" >&2; exit 2;;
esac
