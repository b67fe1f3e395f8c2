#!/usr/bin/env bash
# Apache Kafka 4.x, single node in KRaft mode, from its jars on Maven Central (see kafka-pom.xml).
# Usage: kafka.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=kafka
HOME_DIR="$STATE/kafka"
LIBS="$HOME_DIR/libs"
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

write_config() {
  mkdir -p "$HOME_DIR/data"
  cat > "$HOME_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$XRAYLAB_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$XRAYLAB_KAFKA_PORT,CONTROLLER://127.0.0.1:$XRAYLAB_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$XRAYLAB_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
  write_config
  if [[ ! -f "$HOME_DIR/data/meta.properties" ]]; then
    local cluster_id; cluster_id="$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    log "formatting KRaft storage (cluster $cluster_id)"
    java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$HOME_DIR/server.properties" --standalone \
      >"$RUN/kafka-format.log" 2>&1 || { cat "$RUN/kafka-format.log" >&2; die "storage format failed"; }
  fi
  port_free "$XRAYLAB_KAFKA_PORT"; port_free "$XRAYLAB_KAFKA_CONTROLLER_PORT"
  log "starting Kafka broker on 127.0.0.1:$XRAYLAB_KAFKA_PORT"
  # java itself in the background (not a function or subshell), so $! is the broker's PID.
  java "${JAVA_ARGS[@]}" -Dlog4j2.configurationFile="$HOME_DIR/log4j2.properties" -cp "$LIBS/*" \
    kafka.Kafka "$HOME_DIR/server.properties" >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 90 probe kafka "${TOPICS[@]}" || die "Kafka did not become ready"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  service_status $NAME "the broker does not answer" \
    "broker answers metadata requests on 127.0.0.1:$XRAYLAB_KAFKA_PORT" probe kafka
}

service_main "$@"
