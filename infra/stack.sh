#!/usr/bin/env bash
# The local stack: real Kafka (KRaft), Redis and PostgreSQL as processes on loopback,
# plus Cartstream's own services. State lives under $RUN_DIR (default .run/).
#
#   infra/stack.sh deps        install what is missing (venv + .venv/bin/cartstream, Kafka jars,
#                              Redis/PostgreSQL)
#   infra/stack.sh infra       start Kafka, Redis, PostgreSQL and create the topics
#                              (KAFKA_BROKERS=3: a 3-node Kafka cluster, infra/cluster.sh)
#   infra/stack.sh kafka       start only Kafka and wait for it
#   infra/stack.sh up          infra + the services + the sample catalog, in profile
#                              $CARTSTREAM_PROFILE (dev, the default, or secure)
#   infra/stack.sh down [svc]  stop everything this script started (by pid), or the named services
#   infra/stack.sh status      what runs, and where, and the consumer lag per group
#   infra/stack.sh logs [svc]  tail the logs
#   infra/stack.sh replay ARGS `cartstream replay ARGS` with the running profile's credentials
#   infra/stack.sh clean       down, then remove $RUN_DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=infra/defaults.env
source "$ROOT/infra/defaults.env"
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
# The `cartstream` console script `deps` installs beside that python (pyproject.toml).
CARTSTREAM="$(dirname "$PY")/cartstream"
KAFKA_HOME="$ROOT/infra/kafka"
LOGS="$RUN_DIR/logs"
PIDS="$RUN_DIR/pids"
START_TIMEOUT="${START_TIMEOUT:-90}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
# The profile the services run in (written by `up`; docs/security.md). Data under $RUN_DIR
# is the same in both: switching is `down` then `up` with the other profile.
PROFILE_FILE="$RUN_DIR/profile"
# One broker or a 3-node cluster (KAFKA_BROKERS, recorded in $RUN_DIR/brokers).
# shellcheck source=infra/cluster.sh
source "$ROOT/infra/cluster.sh"

say() { printf '\033[1m[stack]\033[0m %s\n' "$*"; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

is_running() { # name -> 0 when its pid file names a live process
  local f="$PIDS/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_open() { # port -> 0 when something accepts on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

need_free_port() { # name port
  if port_open "$2"; then
    die "$1: port $2 is already in use by another process (set the port variable to move it)"
  fi
}

wait_for() { # description timeout-seconds log-file command...
  local what="$1" timeout="$2" log="$3"; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > timeout )); then
      echo "[stack] ERROR: $what did not become ready within ${timeout}s. Last lines of $log:" >&2
      tail -n 30 "$log" >&2 || true
      exit 3
    fi
    sleep 0.5
  done
}

spawn() { # name log command... : start detached, record the pid
  local name="$1"; shift
  mkdir -p "$LOGS" "$PIDS"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

# ---------------------------------------------------------------- deps

deps_python() {
  if [[ ! -x "$PY" ]]; then
    say "creating virtualenv .venv"
    python3.11 -m venv "$ROOT/.venv" 2>/dev/null || python3 -m venv "$ROOT/.venv"
  fi
  local stamp="$ROOT/.venv/.requirements.sha"
  local want; want="$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" || ! -x "$CARTSTREAM" ]]; then
    say "installing Python requirements (requirements/dev.txt) and the cartstream command"
    "$PY" -m pip install -q --disable-pip-version-check -r requirements/dev.txt
    # Editable: .venv/bin/cartstream runs this checkout's code, edits need no reinstall.
    "$PY" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
}

deps_kafka() {
  if [[ ! -f "$KAFKA_HOME/target/libs/.complete" ]] || [[ "$KAFKA_HOME/pom.xml" -nt "$KAFKA_HOME/target/libs/.complete" ]]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka from Maven Central"
    command -v java >/dev/null || die "Java 17+ is needed to run Kafka"
    say "fetching Apache Kafka jars from Maven Central"
    rm -rf "$KAFKA_HOME/target/libs"
    mvn -q -B -f "$KAFKA_HOME/pom.xml" dependency:copy-dependencies
    touch "$KAFKA_HOME/target/libs/.complete"
  fi
}

deps_apt() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  [[ -n "$PG_BIN" && -x "$PG_BIN/postgres" ]] || pkgs+=(postgresql)
  command -v wrk >/dev/null || pkgs+=(wrk)  # the HTTP benchmarks' load generator
  # Its promtool checks infra/prometheus/ (tests/integration/test_prometheus_config.py); the
  # stack uses nothing else of the package.
  command -v promtool >/dev/null || pkgs+=(prometheus)
  # The cart page's browser tests (tests/browser) drive it with Playwright: Playwright's own
  # browser download is not reachable here.
  command -v chromium >/dev/null || pkgs+=(chromium)
  if ((${#pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]}) or run as root"
    say "installing ${pkgs[*]} from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  fi
}

cmd_deps() { deps_apt; deps_python; deps_kafka; }

# ---------------------------------------------------------------- servers

start_kafka() {
  if is_running kafka; then return; fi
  need_free_port kafka "$KAFKA_PORT"
  local dir="$RUN_DIR/kafka" props="$RUN_DIR/kafka/server.properties"
  mkdir -p "$dir/data" "$LOGS"
  render_kafka_properties "$dir/data" > "$props.tmp"
  chmod 600 "$props.tmp"; mv "$props.tmp" "$props"
  # The tools' client configs (infra/kafka/bin) exist while the broker runs secure only.
  [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]] || rm -f "$dir"/client-*.properties
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    say "formatting Kafka storage (KRaft) under $dir/data"
    local cluster_id; cluster_id="$("$KAFKA_HOME/bin/kafka-storage" random-uuid)"
    "$KAFKA_HOME/bin/kafka-storage" format -t "$cluster_id" -c "$props" >>"$LOGS/kafka.log" 2>&1
  fi
  KAFKA_HEAP_OPTS="$KAFKA_HEAP" KAFKA_LOG4J_CONFIG="$KAFKA_HOME/log4j2-server.properties" \
    spawn kafka "$KAFKA_HOME/bin/kafka-run-class" kafka.Kafka "$props"
}

render_kafka_properties() { # data-dir -> server.properties; secure: + SASL listeners, ACLs
  local files=("$KAFKA_HOME/server.properties.in") admin_password=""
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then
    need_free_port kafka-admin "$KAFKA_ADMIN_PORT"
    files+=("$KAFKA_HOME/server-secure.properties.in")
    admin_password="$(cat "$RUN_DIR/secrets/kafka-admin")"
  fi
  cat "${files[@]}" | sed -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" \
    -e "s#@KAFKA_CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@KAFKA_ADMIN_PORT@#$KAFKA_ADMIN_PORT#g" \
    -e "s#@KAFKA_LOG_DIR@#$1#g" -e "s#@KAFKA_ADMIN_USER@#admin#g" \
    -e "s#@KAFKA_ADMIN_PASSWORD@#$admin_password#g"
}

kafka_env_for() { # process -> its KAFKA_* settings (its principal when secure), one per line
  [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]] || return 0
  RUN_DIR="$RUN_DIR" "$PY" -m infra.kafka_acl env "$1"
}

secure_kafka() { # secure: wait for the broker, then credentials and ACLs (infra/kafka_acl.py)
  local out
  if ! out="$(RUN_DIR="$RUN_DIR" "$PY" -m infra.kafka_acl configure --wait "$START_TIMEOUT" 2>&1)"; then
    printf '%s\n' "$out" >&2
    tail -n 30 "$LOGS/kafka.log" >&2 || true
    die "Kafka: could not configure its principals and ACLs"
  fi
  printf '%s\n' "$out" | sed 's/^/[stack] kafka: /'
}

start_redis() {
  if is_running redis; then return; fi
  need_free_port redis "$REDIS_PORT"
  mkdir -p "$RUN_DIR/redis" "$PIDS" "$LOGS"
  local acl=()
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then
    # One ACL user per service, `default` off (infra/redis_acl.py); the file holds hashes.
    RUN_DIR="$RUN_DIR" "$PY" -m infra.redis_acl aclfile "$RUN_DIR/redis/users.acl"
    acl=(--aclfile "$RUN_DIR/redis/users.acl")
  fi
  # appendonly: the read model survives make down / make up like the other stores.
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR/redis" \
    --appendonly yes --save "" --daemonize no --protected-mode yes "${acl[@]}"
}

redis_url_for() { # process -> the REDIS_URL it runs with (its ACL user in the secure profile)
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then
    RUN_DIR="$RUN_DIR" "$PY" -m infra.redis_acl url "$1"
  else
    echo "$REDIS_URL"
  fi
}

as_pg_user() { # run a command as the unprivileged user that owns the PostgreSQL data
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  if is_running postgres; then return; fi
  need_free_port postgres "$PG_PORT"
  local data="$RUN_DIR/postgres/data"
  mkdir -p "$RUN_DIR/postgres" "$LOGS" "$PIDS"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown postgres "$RUN_DIR/postgres"
    touch "$LOGS/postgres.log"; chown postgres "$LOGS/postgres.log"
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    say "initialising PostgreSQL cluster under $data"
    # trust on loopback only: a developer stack, reachable from this machine alone.
    as_pg_user "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --auth=trust -E UTF8 >>"$LOGS/postgres.log" 2>&1
  fi
  # dev: initdb's trust lines (loopback only). secure: the scram lines are written once the
  # roles have their passwords (secure_postgres), so a cluster last run in dev can be entered.
  [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]] || "$PY" -m infra.pg_roles hba dev "$data"
  local as_user=(); [[ $(id -u) -eq 0 ]] && as_user=(runuser -u postgres --)
  spawn postgres "${as_user[@]}" "$PG_BIN/postgres" -D "$data" -h 127.0.0.1 -p "$PG_PORT" \
    -k "$RUN_DIR/postgres" -c fsync=on -c synchronous_commit=on
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres
}

pg_superuser_password() { # secure: the superuser's password (psql reads PGPASSWORD)
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then cat "$RUN_DIR/secrets/pg-superuser"; fi
}

secure_postgres() { # secure: roles and passwords (infra/pg_roles.py), then scram only
  [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]] || return 0
  RUN_DIR="$RUN_DIR" "$PY" -m infra.pg_roles configure
  "$PY" -m infra.pg_roles hba secure "$RUN_DIR/postgres/data"
  PGPASSWORD="$(pg_superuser_password)" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
    -d postgres -qtAc "SELECT pg_reload_conf()" >/dev/null
}

database_url_for() { # process -> the DATABASE_URL it runs with (its role in the secure profile)
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then
    RUN_DIR="$RUN_DIR" "$PY" -m infra.pg_roles url "$1"
  else
    echo "$DATABASE_URL"
  fi
}

ensure_database() {
  # Local to this function: the services started later never see it.
  local -x PGPASSWORD; PGPASSWORD="$(pg_superuser_password)"
  if ! "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
}

cmd_infra() {
  cmd_deps
  local t0=$SECONDS
  [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]] && ensure_secrets
  choose_brokers
  start_brokers
  start_redis
  start_postgres
  wait_for "Redis" 30 "$LOGS/redis.log" "$PY" -c \
    "import redis,sys; redis.Redis.from_url(sys.argv[1]).ping()" "$(redis_url_for admin)"
  wait_for "PostgreSQL" 60 "$LOGS/postgres.log" pg_ready
  ensure_database
  secure_postgres
  local -a kafka_admin=()
  if [[ "${CARTSTREAM_PROFILE:-dev}" == secure ]]; then
    secure_kafka
    mapfile -t kafka_admin < <(kafka_env_for topics)
  fi
  wait_for "Kafka" "$START_TIMEOUT" "$(kafka_log)" \
    env "${kafka_admin[@]}" "$CARTSTREAM" topics --check-only --wait 2
  env "${kafka_admin[@]}" "$CARTSTREAM" topics --wait 30 | sed 's/^/[stack] /'
  say "infrastructure ready in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- profile

running_services() { local n; for n in write-api aggregator sink-redis sink-postgres sink-catalog read-api; do is_running "$n" && echo "$n"; done; return 0; }

recorded_profile() { cat "$PROFILE_FILE" 2>/dev/null || echo dev; }

choose_profile() { # -> sets CARTSTREAM_PROFILE: the asked one, else the running one, else dev
  local asked="${CARTSTREAM_PROFILE:-}" running
  running="$(running_services)"
  if [[ -z "$asked" ]]; then
    if [[ -n "$running" ]]; then asked="$(recorded_profile)"; else asked=dev; fi
  fi
  [[ "$asked" == dev || "$asked" == secure ]] || die "PROFILE must be dev or secure, got '$asked'"
  if [[ -n "$running" && "$(recorded_profile)" != "$asked" ]]; then
    die "the services run in profile $(recorded_profile); run 'make down' before 'make up PROFILE=$asked'"
  fi
  mkdir -p "$RUN_DIR"
  echo "$asked" > "$PROFILE_FILE"
  export CARTSTREAM_PROFILE="$asked"
}

ensure_secrets() { # secure profile: generated once, mode 0600, never printed
  [[ "$CARTSTREAM_PROFILE" == secure ]] || return 0
  RUN_DIR="$RUN_DIR" "$CARTSTREAM" secrets >/dev/null
}

# ---------------------------------------------------------------- services

# name|module that must exist|command (run from the repo root; `cartstream COMMAND --help`)
SERVICES=(
  "write-api|cart_write/server.py|$CARTSTREAM serve write"
  "aggregator|cart_aggregator/service.py|$CARTSTREAM aggregate"
  "sink-redis|connectors/service.py|$CARTSTREAM sink redis"
  "sink-postgres|connectors/service.py|$CARTSTREAM sink postgres"
  "sink-catalog|connectors/service.py|$CARTSTREAM sink catalog"
  "sink-reservations|connectors/service.py|$CARTSTREAM sink reservations"
  "read-api|cart_read/server.py|$CARTSTREAM serve read"
)

start_services() {
  local entry name module cmd
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module cmd <<<"$entry"
    [[ -f "$ROOT/$module" ]] || continue
    is_running "$name" && continue
    local creds=()
    case "$name" in  # the processes that use Redis, each as its own ACL user when secure
      write-api|read-api|sink-redis|sink-catalog) creds=(REDIS_URL="$(redis_url_for "$name")") ;;
    esac
    case "$name" in  # the processes that use PostgreSQL, each as its role when secure
      read-api|sink-postgres|sink-catalog|sink-reservations) creds+=(DATABASE_URL="$(database_url_for "$name")") ;;
    esac
    local kafka=(); mapfile -t kafka < <(kafka_env_for "$name")  # its principal when secure
    # shellcheck disable=SC2086
    spawn "$name" env RUN_DIR="$RUN_DIR" CARTSTREAM_PROFILE="$CARTSTREAM_PROFILE" "${creds[@]}" \
      "${kafka[@]}" $cmd
  done
}

load_sample_catalog() {
  local stamp; stamp="$(sample_catalog_stamp)"
  [[ -f "$stamp" ]] && return
  [[ -f "$ROOT/connectors/catalog.py" ]] || return 0
  say "loading the sample catalog (connectors/data/sample-catalog.jsonl)"
  local kafka=(); mapfile -t kafka < <(kafka_env_for catalog)
  env "${kafka[@]}" "$CARTSTREAM" catalog load "$ROOT/connectors/data/sample-catalog.jsonl" \
    && touch "$stamp"
}

cmd_up() {
  local t0=$SECONDS
  choose_profile
  cmd_infra
  load_sample_catalog
  start_services
  wait_http() { curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null; }
  [[ -f "$ROOT/cart_write/server.py" ]] && wait_for "write API" 30 "$LOGS/write-api.log" wait_http "$WRITE_PORT"
  [[ -f "$ROOT/cart_read/server.py" ]] && wait_for "read API" 30 "$LOGS/read-api.log" wait_http "$READ_PORT"
  say "up in $((SECONDS - t0))s (profile $CARTSTREAM_PROFILE)"
  cmd_status
}

cmd_down() { # [name...]: stop those services, or everything
  local f name pid files=()
  shopt -s nullglob
  if [[ $# -gt 0 ]]; then for name in "$@"; do files+=("$PIDS/$name.pid"); done
  else files=("$PIDS"/*.pid); fi
  for f in "${files[@]}"; do
    [[ -f "$f" ]] || continue
    name="$(basename "$f" .pid)"
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name (pid $pid)"
      # The whole process group: wrappers (runuser, granian workers) and their children.
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for f in "${files[@]}"; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$(basename "$f" .pid) ignored SIGTERM for 30s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

cmd_status() {
  local entry name port
  kafka_cluster_env
  printf '%-14s %-8s %-8s %s\n' SERVICE STATE PID ENDPOINT
  for entry in $(kafka_status_entries) "redis|$REDIS_URL" "postgres|$DATABASE_URL" \
      "write-api|http://127.0.0.1:$WRITE_PORT" "aggregator|http://127.0.0.1:${AGG_METRICS_PORT:-9102}/metrics" \
      "sink-redis|http://127.0.0.1:${SINK_REDIS_METRICS_PORT:-9111}/metrics" \
      "sink-postgres|http://127.0.0.1:${SINK_POSTGRES_METRICS_PORT:-9112}/metrics" \
      "sink-catalog|http://127.0.0.1:${SINK_CATALOG_METRICS_PORT:-9113}/metrics" \
      "sink-reservations|http://127.0.0.1:${SINK_RESERVATIONS_METRICS_PORT:-9114}/metrics" \
      "read-api|http://127.0.0.1:$READ_PORT"; do
    IFS='|' read -r name port <<<"$entry"
    if is_running "$name"; then
      printf '%-14s %-8s %-8s %s\n' "$name" up "$(cat "$PIDS/$name.pid")" "$port"
    elif [[ -f "$LOGS/$name.log" ]]; then
      printf '%-14s %-8s %-8s %s\n' "$name" down - "$port"
    fi
  done
  [[ -n "$(running_services)" ]] && echo "profile: $(recorded_profile)"
  kafka_running && echo "Kafka: $(recorded_brokers) broker(s), bootstrap $KAFKA_BOOTSTRAP"
  if kafka_running && [[ -x "$CARTSTREAM" ]]; then
    echo
    # Consumer groups are the admin principal's to describe in the secure profile.
    local -a admin_env=()
    mapfile -t admin_env < <(CARTSTREAM_PROFILE="$(recorded_profile)" kafka_env_for admin)
    env "${admin_env[@]}" "$CARTSTREAM" lag --timeout 3 || echo "(consumer lag unavailable)"
  fi
  echo "logs: $LOGS   Kafka tools: export PATH=\"$KAFKA_HOME/bin:\$PATH\""
}

cmd_logs() {
  mkdir -p "$LOGS"
  if [[ $# -gt 0 ]]; then tail -n 50 -F "$LOGS/$1.log"; else tail -n 20 -F "$LOGS"/*.log; fi
}

cmd_replay() { # args -> `cartstream replay` as the profile that runs: secure gives it the admin
  # Redis user, the owner role and the admin Kafka principal (it rewrites every read model).
  CARTSTREAM_PROFILE="$(recorded_profile)"
  local -a creds=()
  if [[ "$CARTSTREAM_PROFILE" == secure ]]; then
    creds=(REDIS_URL="$(redis_url_for admin)" DATABASE_URL="$(database_url_for replay)")
    mapfile -t -O "${#creds[@]}" creds < <(kafka_env_for replay)
  fi
  env RUN_DIR="$RUN_DIR" CARTSTREAM_PROFILE="$CARTSTREAM_PROFILE" "${creds[@]}" "$CARTSTREAM" replay "$@"
}

cmd_clean() {
  cmd_down
  say "removing $RUN_DIR"
  rm -rf "$RUN_DIR"
}

case "${1:-}" in
  deps) cmd_deps ;;
  infra) cmd_infra ;;
  kafka) cmd_kafka ;;
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  replay) shift; cmd_replay "$@" ;;
  clean) cmd_clean ;;
  *) sed -n '2,16p' "$0"; exit 64 ;;
esac
