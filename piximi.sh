#!/usr/bin/env bash
# piximi-py's two commands, from a fresh clone:
#   ./piximi.sh serve [--port N]   build the static site (dist/) and serve it on localhost
#   ./piximi.sh test [PYTEST ARGS] install what the tests need and run them
# Both create .venv (Python >= 3.11) and install the npm packages on first use.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    local stamp=.venv/.piximi-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e ".[native,test,train]"
        touch "$stamp"
    fi
}

setup_chromium() {
    if [ ! -x /usr/bin/chromium ]; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "installing Debian's chromium for the browser tests" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    fi
}

setup_node() {
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
        npm ci --no-audit --no-fund --loglevel=error
        touch node_modules
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    serve)
        setup_python
        setup_node
        exec .venv/bin/python build.py serve "$@"
        ;;
    test)
        setup_python
        setup_node
        setup_chromium
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: ./piximi.sh serve [--port N] | ./piximi.sh test [pytest args]" >&2
        exit 2
        ;;
esac
