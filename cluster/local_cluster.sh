#!/usr/bin/env bash
# Start (or stop) a two-node Ray cluster on this one machine, for trying multi-node placement:
# the head plus one worker, each with a custom resource and logical GPUs (Ray does not check them).
#   bash cluster/local_cluster.sh start    then  RAY_ADDRESS=127.0.0.1:6380 rayda ... run.ray_address=127.0.0.1:6380
#   bash cluster/local_cluster.sh stop
# Ray 2.60 turns on token authentication for `ray start --head`; every client needs RAY_AUTH_MODE=token.
set -euo pipefail
export RAY_AUTH_MODE=token
PORT=${RAY_PORT:-6380}
RAY=${RAY:-ray}
case "${1:-start}" in
  start)
    $RAY start --head --port "$PORT" --num-cpus 4 --num-gpus 2 --resources '{"train_node": 1}' --include-dashboard false
    $RAY start --address "127.0.0.1:$PORT" --num-cpus 4 --num-gpus 2 --resources '{"judge_node": 1}'
    echo "cluster up at 127.0.0.1:$PORT (export RAY_AUTH_MODE=token for clients)";;
  stop) $RAY stop --force;;
  *) echo "usage: $0 start|stop" >&2; exit 2;;
esac
