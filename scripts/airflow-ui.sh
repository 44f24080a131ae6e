#!/usr/bin/env bash
# `make airflow`: Airflow's UI on this project's dags folder, with `airflow standalone` (scheduler,
# DAG processor, triggerer and API server under one parent process) and the embedded shape's
# settings of scripts/airflow-env.sh. Prints the UI's URL and where the login is, once at start
# and again when the API server answers. Ctrl-C stops every component.
#
# `airflow standalone` starts its components as `airflow` found on PATH: the Makefile puts the
# project's .venv/bin first on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow-env.sh
source "$here/airflow-env.sh"

if ! command -v airflow >/dev/null 2>&1; then
  echo "make airflow: no \`airflow\` on PATH; run it through \`make airflow\`, which puts .venv/bin on PATH" >&2
  exit 1
fi

url="$AIRFLOW__API__BASE_URL"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
banner() {
  echo "make airflow | Airflow UI: $url"
  echo "make airflow | login: user admin, password in $passwords (written on the first start)"
}
banner
echo "make airflow | AIRFLOW_HOME=$AIRFLOW_HOME, settings from scripts/airflow-env.sh; Ctrl-C stops it"

# Each component should get one stop signal. Ctrl-C sends SIGINT to the terminal's foreground
# process group, and standalone, on its own SIGINT, sends SIGTERM to each component: a component
# in that group would get both, and Airflow's signal handlers log under a lock that the second
# signal's handler then waits for forever (the triggerer or the DAG processor hang, standalone
# waits for them). So standalone and its components run in a process group of their own (job
# control, `set -m`), and this script hands it the one SIGINT. Line-buffered output, so that
# `make airflow | tee` shows the components' lines as they come.
set -m
PYTHONUNBUFFERED=1 airflow standalone &
standalone=$!
set +m
trap 'kill -INT "$standalone" 2>/dev/null || true' INT TERM HUP

# Say it again when the UI answers: by then the components' start-up output has scrolled it away.
(
  while kill -0 "$standalone" 2>/dev/null; do
    if python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$url/api/v2/monitor/health" >/dev/null 2>&1; then
      echo "make airflow | the UI answers:"
      banner
      exit 0
    fi
    sleep 2
  done
) &
watcher=$!

# `wait` returns early when a trapped signal arrives; wait again until standalone has exited.
status=0
while :; do
  wait "$standalone" && status=0 || status=$?
  kill -0 "$standalone" 2>/dev/null || break
done
kill "$watcher" 2>/dev/null || true
exit "$status"
