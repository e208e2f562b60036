#!/usr/bin/env bash
# compose.yaml's Kafka: the official image, configured from its KAFKA_* environment as the
# secure profile's broker (infra/kafka/server-secure.properties.in), with the admin password
# read from its Docker secret here rather than written into compose.yaml.
set -euo pipefail
admin_password="$(tr -d '\r\n' < /run/secrets/kafka-admin)"
plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin_password\" user_admin=\"$admin_password\";"
scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
export KAFKA_LISTENER_NAME_ADMIN_PLAIN_SASL_JAAS_CONFIG="$plain"
export KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG="$plain"
export KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___512_SASL_JAAS_CONFIG="$scram"
export KAFKA_LISTENER_NAME_HOST_SCRAM___SHA___512_SASL_JAAS_CONFIG="$scram"
exec /etc/kafka/docker/run
