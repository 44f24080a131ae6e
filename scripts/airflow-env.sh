# Airflow settings of the embedded shape (`airflow standalone` on one machine: LocalExecutor,
# SQLite metadata database), in one place. Sourced with bash by `make airflow`
# (scripts/airflow-ui.sh) and by scripts/demo.py; the at-scale shape (helm/) sets its own.
#
# Every setting is a default: a variable already in the environment wins, so for example
# `AIRFLOW__CORE__PARALLELISM=4 make airflow` overrides one of them. `make airflow` sets
# AIRFLOW__API__HOST and AIRFLOW__API__PORT from its HOST and PORT variables.

_tp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Where things live: the project's dags and plugins folders, state under the checkout
# (the Makefile exports the same defaults for every target).
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_tp_root/.airflow}"
export TP_HOME="${TP_HOME:-$_tp_root/.tp_home}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_tp_root/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$_tp_root/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"

# The API server (UI, REST API and the execution API the tasks talk to) listens on loopback.
# Airflow's default 0.0.0.0 would put the UI on every network interface, with SimpleAuthManager's
# plaintext passwords, and makes SimpleAuthManager warn that the deployment "looks like
# production". Set HOST=0.0.0.0 (make airflow) to open it to the network on purpose.
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"

# The URL the API server is reached at. Tasks find the execution API from it
# ({base_url}/execution/); without it they assume http://localhost:8080 and cannot report to
# an API server on any other port.
case "$AIRFLOW__API__HOST" in
  0.0.0.0 | :: | "") _tp_url_host=127.0.0.1 ;;
  *:*) _tp_url_host="[${AIRFLOW__API__HOST#[}"; _tp_url_host="${_tp_url_host%]}]" ;;
  *) _tp_url_host="$AIRFLOW__API__HOST" ;;
esac
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://$_tp_url_host:$AIRFLOW__API__PORT}"

# How many task instances run at once, and so how many LocalExecutor worker processes the
# scheduler forks at start: one per CPU (Airflow's default 32 starts 32 idle processes of
# about 150 MB each, and 32 concurrent tasks would only compete for the same cores).
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}"

# The key that signs the JWTs of the UI, the REST API and the execution API. The one Airflow
# generates into airflow.cfg is 16 random bytes, below the 64 bytes HS512 needs (PyJWT's
# InsecureKeyLengthWarning on every token). A 64-byte key is generated once per AIRFLOW_HOME,
# readable by its owner only, and read by every component through a command, so it never sits
# in the environment of a task (where a task printing its environment would leak it to logs).
if [ -z "${AIRFLOW__API_AUTH__JWT_SECRET:-}" ] && [ -z "${AIRFLOW__API_AUTH__JWT_SECRET_CMD:-}" ]; then
  _tp_jwt_secret="$AIRFLOW_HOME/jwt_secret"
  if [ ! -s "$_tp_jwt_secret" ]; then
    mkdir -p "$AIRFLOW_HOME"
    (umask 077 && head -c 64 /dev/urandom | base64 | tr -d '\n' > "$_tp_jwt_secret")
  fi
  export AIRFLOW__API_AUTH__JWT_SECRET_CMD="cat '$_tp_jwt_secret'"
fi

unset _tp_root _tp_url_host _tp_jwt_secret
