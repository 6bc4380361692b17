#!/usr/bin/env bash
# Start or stop an MLflow tracking server with a database backend, the way a
# research group runs one for jobs on many nodes (here: SQLite + a local artifact
# folder; on a cluster point --backend-store-uri at PostgreSQL/MySQL if you have it).
#
#   bash .ci/mlflow-server.sh start DIR [PORT] [HOST]   # prints the tracking URI
#   bash .ci/mlflow-server.sh stop DIR
#   bash .ci/mlflow-server.sh uri DIR
#
# DIR holds everything: mlflow.db (runs, params, metrics), artifacts/, server.log,
# server.pid, uri. PORT 0 or omitted picks a free port. HOST defaults to 127.0.0.1;
# use 0.0.0.0 (and the login node's name in the URI) so compute nodes can reach it.
# Jobs log to it with MLFLOW_TRACKING_URI=<uri> or `--config mlflow_uri=<uri>`.
set -uo pipefail

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || { sed -n 2,14p "$0"; exit 2; }
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

alive() { [[ -s $dir/server.pid ]] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; }

case $cmd in
start)
    if alive; then cat "$dir/uri"; exit 0; fi
    port=${3:-0}; host=${4:-127.0.0.1}
    if [[ $port == 0 ]]; then
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    mkdir -p "$dir/artifacts"
    # --workers 1: one process keeps SQLite writes serialised (a real database
    # takes more). --serve-artifacts: jobs upload artifacts through the server,
    # so compute nodes need no access to the artifact folder itself.
    # --allowed-hosts '*': compute nodes call it by the login node's name/IP.
    setsid mlflow server \
        --backend-store-uri "sqlite:///$dir/mlflow.db" \
        --artifacts-destination "$dir/artifacts" --serve-artifacts \
        --host "$host" --port "$port" --workers 1 --allowed-hosts '*' \
        >"$dir/server.log" 2>&1 < /dev/null &
    echo $! >"$dir/server.pid"
    uri="http://127.0.0.1:$port"
    [[ $host != 127.0.0.1 && $host != localhost ]] && uri="http://$(hostname -f 2>/dev/null || hostname):$port"
    # Wait for the REST API, not just the socket: the first start creates the schema.
    for _ in $(seq 240); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
            echo "$uri" >"$dir/uri"; echo "$uri"; exit 0
        fi
        alive || break
        sleep 0.5
    done
    echo "mlflow-server: ERROR: server did not answer on port $port; last log lines:" >&2
    tail -n 30 "$dir/server.log" >&2
    alive && kill -- -"$(cat "$dir/server.pid")" 2>/dev/null
    exit 1
    ;;
stop)
    if alive; then
        pid=$(cat "$dir/server.pid")
        # setsid made the server its own process group: stop it and its workers.
        kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL -- -"$pid" 2>/dev/null
        echo "mlflow-server: stopped (pid $pid)"
    fi
    rm -f "$dir/server.pid"
    ;;
uri)
    alive && cat "$dir/uri"
    ;;
*)
    sed -n 2,14p "$0"; exit 2 ;;
esac
