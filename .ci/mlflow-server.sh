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
# server.pid, uri (and auth.ini, auth.db, flask-secret-key in authenticated mode). PORT 0 or omitted picks
# a free port. HOST defaults to 127.0.0.1: only this machine can reach the server.
# Authenticated mode: with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD set, the
# server runs MLflow's basic-auth app and they become its admin account on first start
# (passed in the environment only: never a file, nor the command line). Any other HOST
# (0.0.0.0: compute nodes reach it by this machine's name) needs authenticated mode.
# Jobs log to it with MLFLOW_TRACKING_URI=<uri> (and the two credential variables), or
# `snakemake --config 'mlflow={uri: <uri>}'`; never put a password in the URI.
set -uo pipefail

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || { sed -n 2,19p "$0"; exit 2; }
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

alive() { [[ -s $dir/server.pid ]] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; }

case $cmd in
start)
    if alive; then cat "$dir/uri"; exit 0; fi
    port=${3:-0}; host=${4:-127.0.0.1}
    auth=()
    if [[ -n ${MLFLOW_TRACKING_USERNAME:-} && -n ${MLFLOW_TRACKING_PASSWORD:-} ]]; then
        # Users live in DIR/auth.db; new users may read every experiment and write only
        # their own (default_permission READ). No password in this file: the admin's
        # comes from the environment, and only on the first start.
        printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s/auth.db\nadmin_username = %s\n' \
            "$dir" "$MLFLOW_TRACKING_USERNAME" >"$dir/auth.ini"
        export MLFLOW_AUTH_CONFIG_PATH=$dir/auth.ini
        export MLFLOW_AUTH_ADMIN_USERNAME=$MLFLOW_TRACKING_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD
        # The web UI's CSRF key: the user's, else one made once and kept private in DIR.
        if [[ -z ${MLFLOW_FLASK_SERVER_SECRET_KEY:-} ]]; then
            [[ -s $dir/flask-secret-key ]] || (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dir/flask-secret-key")
            MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$dir/flask-secret-key"); export MLFLOW_FLASK_SERVER_SECRET_KEY
        fi
        auth=(--app-name basic-auth)
        # auth.db holds password hashes, mlflow.db every run: private to the server's user
        # (everyone else goes through the server and its accounts).
        umask 077; chmod go-rwx "$dir"
    elif [[ $host != 127.0.0.1 && $host != localhost ]]; then
        echo "mlflow-server: ERROR: serving $host (beyond this machine) needs authenticated mode:" \
             "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (see docs/security.md)" >&2
        exit 2
    fi
    if [[ $port == 0 ]]; then
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    mkdir -p "$dir/artifacts"
    # --workers 1: one process keeps SQLite writes serialised (a real database
    # takes more). --serve-artifacts: jobs upload artifacts through the server,
    # so compute nodes need no access to the artifact folder itself.
    # --allowed-hosts: the names this server is called by (the Host header, port
    # included), so a page elsewhere cannot reach it through a rebound DNS name.
    uri="http://127.0.0.1:$port"
    allowed="127.0.0.1:$port,localhost:$port"
    if [[ $host != 127.0.0.1 && $host != localhost ]]; then
        name=$(hostname -f 2>/dev/null || hostname)
        uri="http://$name:$port"
        allowed="$allowed,$name:$port,$(hostname):$port"
        [[ $host != 0.0.0.0 ]] && allowed="$allowed,$host:$port"
    fi
    # MLflow's server jobs (its GenAI job runner: five huey consumer processes, ~20 s of
    # CPU at each start) serve nothing locallearn logs; off unless the caller turns them on.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
    setsid mlflow server "${auth[@]}" \
        --backend-store-uri "sqlite:///$dir/mlflow.db" \
        --artifacts-destination "$dir/artifacts" --serve-artifacts \
        --host "$host" --port "$port" --workers 1 --allowed-hosts "$allowed" \
        >"$dir/server.log" 2>&1 < /dev/null &
    echo $! >"$dir/server.pid"
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
    sed -n 2,19p "$0"; exit 2 ;;
esac
