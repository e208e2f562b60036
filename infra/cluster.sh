# Kafka as one broker or as a local three-node KRaft cluster; sourced by infra/stack.sh, whose
# helpers (is_running, need_free_port, spawn, say, die) it uses.
#
# `make up BROKERS=3` (KAFKA_BROKERS=3) starts three nodes, each a broker and a controller, from
# the same Maven jars: node i listens on KAFKA_PORT + 2(i-1), its controller on
# KAFKA_CONTROLLER_PORT + 2(i-1) (9092/9093, 9094/9095, 9096/9097 by default), keeps its data in
# $RUN_DIR/kafka-i and its pid as kafka-i. The single broker's data ($RUN_DIR/kafka) is left
# alone. The count is recorded in $RUN_DIR/brokers so that `up` without BROKERS while a cluster
# runs keeps it, and `make down && make up` is one broker again.

BROKERS_FILE="$RUN_DIR/brokers"
CLUSTER_SIZE=3

recorded_brokers() { cat "$BROKERS_FILE" 2>/dev/null || echo 1; }

kafka_names() { # [count] -> the pid names of that many brokers (default: the recorded count)
  local n="${1:-$(recorded_brokers)}" i
  if [[ "$n" == 1 ]]; then echo kafka; return; fi
  for ((i = 1; i <= n; i++)); do echo "kafka-$i"; done
}

kafka_running() { # 0 when any broker runs, single or a cluster node
  local name
  for name in kafka $(kafka_names "$CLUSTER_SIZE"); do is_running "$name" && return 0; done
  return 1
}

node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }

kafka_log() { echo "$LOGS/$(kafka_names | head -n1).log"; } # the (first) broker's log

choose_brokers() { # -> exports KAFKA_BROKERS: the asked count, else the running one, else 1
  local asked="${KAFKA_BROKERS:-}"
  if [[ -z "$asked" ]]; then
    if kafka_running; then asked="$(recorded_brokers)"; else asked=1; fi
  fi
  [[ "$asked" == 1 || "$asked" == "$CLUSTER_SIZE" ]] ||
    die "BROKERS must be 1 or $CLUSTER_SIZE, got '$asked'"
  # The secure profile's SASL listeners are rendered for one broker only (server-secure.properties.in).
  [[ "$asked" == 1 || "${CARTSTREAM_PROFILE:-dev}" != secure ]] ||
    die "BROKERS=$asked runs in the dev profile only; the secure profile runs one broker"
  if kafka_running && [[ "$(recorded_brokers)" != "$asked" ]]; then
    die "Kafka runs with $(recorded_brokers) broker(s); run 'make down' before 'make up BROKERS=$asked'"
  fi
  [[ "$asked" == 1 ]] || check_cluster_ports
  [[ "$(recorded_brokers)" == "$asked" ]] || switch_kafka_data "$asked"
  mkdir -p "$RUN_DIR"
  echo "$asked" > "$BROKERS_FILE"
  export KAFKA_BROKERS="$asked"
  kafka_cluster_env
}

switch_kafka_data() { # count: the other Kafka's log is not the one the aggregator resumes from
  local recovery="${AGG_RECOVERY_DIR:-$RUN_DIR/aggregator/recovery}" aside
  ! is_running aggregator ||
    die "the services run on the other Kafka; run 'make down' before 'make up BROKERS=$1'"
  [[ -d "$recovery" ]] || return 0
  # Its input offsets belong to the other log: resumed here it would skip events.
  aside="$recovery.brokers-$(recorded_brokers).$(date +%s)"
  mv "$recovery" "$aside"
  say "Kafka: $(recorded_brokers) -> $1 broker(s), another log. The aggregator's recovery (made" \
      "from the old one) is moved to $aside, so the fold starts again from this log; Redis and" \
      "PostgreSQL keep carts of both logs ('make clean' first for a clean start)."
}

check_cluster_ports() { # the six ports the nodes derive must differ
  local i ports=()
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do ports+=("$(node_port "$i")" "$(node_controller_port "$i")"); done
  if [[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) -ne ${#ports[@]} ]]; then
    die "cluster ports collide (${ports[*]}): node i uses KAFKA_PORT+2(i-1) and KAFKA_CONTROLLER_PORT+2(i-1); set KAFKA_CONTROLLER_PORT=KAFKA_PORT+1"
  fi
}

sample_catalog_stamp() { # the sample catalog is loaded once per Kafka: one broker's, the cluster's
  if [[ "$(recorded_brokers)" == 1 ]]; then echo "$RUN_DIR/.sample-catalog-loaded"
  else echo "$RUN_DIR/kafka-1/.sample-catalog-loaded"; fi
}

kafka_cluster_env() { # a cluster: clients bootstrap from every node, topics get 3 replicas
  [[ "${KAFKA_BROKERS:-$(recorded_brokers)}" == "$CLUSTER_SIZE" ]] || return 0
  local i nodes=()
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do nodes+=("localhost:$(node_port "$i")"); done
  # Only the one-broker default is replaced: a bootstrap list set by hand is kept.
  if [[ "$KAFKA_BOOTSTRAP" == "localhost:$KAFKA_PORT" ]]; then
    KAFKA_BOOTSTRAP="$(IFS=,; echo "${nodes[*]}")"
  fi
  : "${KAFKA_REPLICATION_FACTOR:=$CLUSTER_SIZE}"
  export KAFKA_BOOTSTRAP KAFKA_REPLICATION_FACTOR
}

kafka_cluster_id() { # one KRaft cluster id for all nodes, made once
  local f="$RUN_DIR/kafka-cluster.id" id="-"
  if [[ ! -s "$f" ]]; then
    # What `kafka-storage random-uuid` prints (16 random bytes, URL-safe base64, no padding;
    # never starting with '-'), without starting a JVM for it.
    while [[ "$id" == -* ]]; do
      id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    done
    echo "$id" > "$f"
  fi
  cat "$f"
}

render_kafka_node() { # index (1..3) -> writes $RUN_DIR/kafka-i/server.properties
  local i="$1" voters="" j dir="$RUN_DIR/kafka-$1"
  for ((j = 1; j <= CLUSTER_SIZE; j++)); do
    voters+="${voters:+,}$j@127.0.0.1:$(node_controller_port "$j")"
  done
  mkdir -p "$dir/data" "$LOGS"
  sed -e "s#@NODE_ID@#$i#g" -e "s#@QUORUM_VOTERS@#$voters#g" \
      -e "s#@KAFKA_PORT@#$(node_port "$i")#g" \
      -e "s#@KAFKA_CONTROLLER_PORT@#$(node_controller_port "$i")#g" \
      -e "s#@KAFKA_LOG_DIR@#$dir/data#g" "$KAFKA_HOME/cluster.properties.in" > "$dir/server.properties"
}

format_kafka_nodes() { # the nodes whose storage is new, formatted at once with one cluster id
  local i pids=() id
  id="$(kafka_cluster_id)"
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do
    [[ -f "$RUN_DIR/kafka-$i/data/meta.properties" ]] && continue
    say "formatting kafka-$i's storage (KRaft cluster $id) under $RUN_DIR/kafka-$i/data"
    "$KAFKA_HOME/bin/kafka-storage" format -t "$id" -c "$RUN_DIR/kafka-$i/server.properties" \
      >>"$LOGS/kafka-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in "${pids[@]}"; do wait "$i" || die "formatting Kafka storage failed; see $LOGS/kafka-*.log"; done
}

start_brokers() { # KAFKA_BROKERS (choose_brokers) brokers: start_kafka, or the cluster's nodes
  [[ "$KAFKA_BROKERS" == 1 ]] && { start_kafka; return; }
  local i name
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do
    name="kafka-$i"
    is_running "$name" && continue
    need_free_port "$name" "$(node_port "$i")"
    need_free_port "$name controller" "$(node_controller_port "$i")"
    render_kafka_node "$i"
  done
  format_kafka_nodes
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do
    name="kafka-$i"
    is_running "$name" && continue
    KAFKA_HEAP_OPTS="$KAFKA_HEAP" KAFKA_LOG4J_CONFIG="$KAFKA_HOME/log4j2-server.properties" \
      spawn "$name" "$KAFKA_HOME/bin/kafka-run-class" kafka.Kafka "$RUN_DIR/$name/server.properties"
  done
}

kafka_status_entries() { # name|endpoint lines for `status`
  local i
  if [[ "$(recorded_brokers)" == 1 ]]; then echo "kafka|$KAFKA_BOOTSTRAP"; return; fi
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do echo "kafka-$i|localhost:$(node_port "$i")"; done
}

cmd_kafka() { # only Kafka: the brokers, then wait until all of them answer (tests use this)
  choose_brokers
  deps_kafka
  start_brokers
  wait_for "Kafka" "$START_TIMEOUT" "$(kafka_log)" "$CARTSTREAM" topics --check-only --wait 2
  say "Kafka ready: $KAFKA_BROKERS broker(s) at $KAFKA_BOOTSTRAP"
}
