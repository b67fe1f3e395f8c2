#!/usr/bin/env bash
# Apache Kafka 4.x, single node in KRaft mode, from its jars on Maven Central (see kafka-pom.xml).
# Clients reach it only by SASL/SCRAM-SHA-512 over TLS (listener SASL_SSL), each job as a user of its own with
# ACLs for that job alone (xraylab/kafka_security.py; StandardAuthorizer, nothing allowed without an ACL):
# - a private CA and the broker's certificate (certs/, keys 0600; PEM key store and trust store);
# - the admin's SCRAM credential is written into the metadata when the storage is formatted, the jobs' users
#   and ACLs are applied by the admin once the broker answers (probe.py kafka-acls);
# - the controller listener (127.0.0.1 only) takes TLS with a client certificate signed by that CA.
# Passwords are generated into the env file (0600) once.
# Usage: kafka.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=kafka
HOME_DIR="$STATE/kafka"
LIBS="$HOME_DIR/libs"
CERTS="$HOME_DIR/certs"
TOPICS=("$XRAYLAB_KAFKA_TOPIC:$XRAYLAB_KAFKA_PARTITIONS" "$XRAYLAB_KAFKA_DLQ_TOPIC:1" "$XRAYLAB_ALERT_TOPIC:1")

resolve_jars() {
  local stamp="$LIBS/.pom.sha256" want
  want="$(sha256sum "$LOCAL_DIR/kafka-pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  log "resolving Kafka jars from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$LOCAL_DIR/kafka-pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime >"$RUN/kafka-maven.log" 2>&1 \
    || { tail -n 30 "$RUN/kafka-maven.log" >&2; die "Maven could not resolve the Kafka jars"; }
  echo "$want" > "$stamp"
}

ensure_credentials() {
  local job
  for job in ADMIN NOTIFIER INGEST MONITOR; do
    [[ -n "$(env_get "XRAYLAB_KAFKA_${job}_PASSWORD")" ]] || env_set "XRAYLAB_KAFKA_${job}_PASSWORD" "$(random_secret)"
  done
  ADMIN_USER="${XRAYLAB_KAFKA_ADMIN_USER:-xraylab-admin}"
  ADMIN_PASSWORD="$(env_get XRAYLAB_KAFKA_ADMIN_PASSWORD)"
}

# ensure_certs: the CA and the broker's certificate (server and client use: the broker is the controller's client),
# and the PEM key store Kafka reads (key and certificate in one file).
ensure_certs() {
  make_certs kafka "$CERTS" broker xraylab-kafka-ca xraylab-kafka-broker serverAuth,clientAuth "the Kafka certificates"
  (umask 077; cat "$CERTS/broker.key" "$CERTS/broker.crt" > "$CERTS/broker.pem")
}

write_config() {
  mkdir -p "$HOME_DIR/data"
  (umask 077; cat > "$HOME_DIR/server.properties") <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$XRAYLAB_KAFKA_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$XRAYLAB_KAFKA_PORT,CONTROLLER://127.0.0.1:$XRAYLAB_KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$XRAYLAB_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$ADMIN_USER" password="$ADMIN_PASSWORD";
ssl.keystore.type=PEM
ssl.keystore.location=$CERTS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.crt
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:$ADMIN_USER;User:CN=xraylab-kafka-broker
allow.everyone.if.no.acl.found=false
log.dirs=$HOME_DIR/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  cat > "$HOME_DIR/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $RUN/kafka-server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
PROPS
}

JAVA_ARGS=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true)
java_run() { java "${JAVA_ARGS[@]}" -Dlog4j2.configurationFile="$HOME_DIR/log4j2.properties" -cp "$LIBS/*" "$@"; }

start() {
  need_venv
  already_running $NAME probe kafka "${TOPICS[@]}" && return 0
  command -v java >/dev/null || die "Java 17+ is needed for Kafka 4"
  resolve_jars
  ensure_credentials
  ensure_certs
  write_config
  if [[ -f "$HOME_DIR/data/meta.properties" && ! -f "$HOME_DIR/data/.scram" ]]; then
    log "this stack's Kafka data predates SASL/SCRAM (no admin credential in its metadata): formatting it anew"
    rm -rf "$HOME_DIR/data"; mkdir -p "$HOME_DIR/data"
  fi
  if [[ ! -f "$HOME_DIR/data/meta.properties" ]]; then
    local cluster_id; cluster_id="$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    log "formatting KRaft storage (cluster $cluster_id) with the admin's SCRAM credential"
    java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$HOME_DIR/server.properties" --standalone \
      --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$ADMIN_PASSWORD]" \
      >"$RUN/kafka-format.log" 2>&1 || { cat "$RUN/kafka-format.log" >&2; die "storage format failed"; }
    touch "$HOME_DIR/data/.scram"
  fi
  port_free "$XRAYLAB_KAFKA_PORT"; port_free "$XRAYLAB_KAFKA_CONTROLLER_PORT"
  log "starting Kafka broker on 127.0.0.1:$XRAYLAB_KAFKA_PORT"
  # java itself in the background (not a function or subshell), so $! is the broker's PID.
  java "${JAVA_ARGS[@]}" -Dlog4j2.configurationFile="$HOME_DIR/log4j2.properties" -cp "$LIBS/*" \
    kafka.Kafka "$HOME_DIR/server.properties" >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 90 probe kafka "${TOPICS[@]}" || die "Kafka did not become ready"
  probe kafka-acls || die "could not set the jobs' Kafka users and ACLs"
  log "ready (pid $(pid_of $NAME)): SASL_SSL, one user per job"
}

status() {
  service_status $NAME "the broker does not answer" \
    "broker answers the admin's metadata requests over SASL_SSL on 127.0.0.1:$XRAYLAB_KAFKA_PORT" probe kafka
}

service_main "$@"
