# Sourced by the tool wrappers here. In the secure profile the broker takes only SASL/SCRAM
# clients with ACLs, so each tool is given the client config of a principal, unless the
# caller passed one: KAFKA_CLIENT_CONFIG if set, else $RUN_DIR/kafka/client-<principal>.properties
# (RUN_DIR: default the repository's .run/), which `make up PROFILE=secure` writes (mode 0600,
# infra/kafka_acl.py) and a dev start removes. The console producer runs as `catalog` (it may
# only write product-details-events, the seed's topic); the other tools as `admin`.

client_config_args() { # principal tool-args... -> "--command-config FILE" lines, or nothing
  local principal="$1" arg; shift
  for arg in "$@"; do
    case "$arg" in --command-config|--command-config=*|--producer.config|--producer.config=*|\
      --consumer.config|--consumer.config=*) return 0 ;; esac
  done
  local here; here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
  local file="${KAFKA_CLIENT_CONFIG:-${RUN_DIR:-$here/../../../.run}/kafka/client-$principal.properties}"
  if [[ -f "$file" ]]; then printf '%s\n%s\n' --command-config "$file"; fi
}
