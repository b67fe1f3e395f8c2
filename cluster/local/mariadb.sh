#!/usr/bin/env bash
# The project's own MariaDB instance (Debian's mariadb-server): own data directory, port and socket
# under the state folder. Never starts, stops or reads a system instance.
# Usage: mariadb.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=mariadb
DIR="$STATE/mariadb"
SOCK="$DIR/mysqld.sock"
DB=xraylab
DB_USER=xraylab

sql_root() { "$(find_bin mariadb)" --no-defaults --protocol=socket --socket="$SOCK" -uroot "$@"; }

start() {
  need_venv
  already_running $NAME probe mariadb && return 0
  install_if_missing mariadbd mariadb-server
  local user_flag=(); [[ "$(id -u)" == 0 ]] && user_flag=(--user=root)
  mkdir -p "$DIR"
  if [[ ! -d "$DIR/data/mysql" ]]; then
    log "initialising data directory $DIR/data"
    "$(find_bin mariadb-install-db)" --no-defaults --datadir="$DIR/data" "${user_flag[@]}" \
      --auth-root-authentication-method=socket --skip-test-db >"$RUN/mariadb-install.log" 2>&1 \
      || { tail -n 20 "$RUN/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  port_free "$XRAYLAB_MARIADB_PORT"
  log "starting mariadbd on 127.0.0.1:$XRAYLAB_MARIADB_PORT"
  "$(find_bin mariadbd)" --no-defaults --datadir="$DIR/data" "${user_flag[@]}" \
    --bind-address=127.0.0.1 --port="$XRAYLAB_MARIADB_PORT" --socket="$SOCK" \
    --pid-file="$DIR/mariadbd.pid" --log-error="$RUN/mariadb-server.log" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --max-connections=200 --character-set-server=utf8mb4 \
    >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 sql_root -e "SELECT 1" || die "MariaDB did not answer on its socket"
  local password; password="$(env_get XRAYLAB_MARIADB_PASSWORD)"
  if [[ -z "$password" ]]; then password="$(random_secret)"; env_set XRAYLAB_MARIADB_PASSWORD "$password"; fi
  # The application user gets only what it needs on its own database (DDL for migrations, DML for rows).
  sql_root <<SQL
CREATE DATABASE IF NOT EXISTS $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES ON $DB.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
  env_set XRAYLAB_MARIADB_URL "mysql+pymysql://$DB_USER:$password@127.0.0.1:$XRAYLAB_MARIADB_PORT/$DB?charset=utf8mb4"
  wait_ready $NAME 30 probe mariadb || die "MariaDB does not answer SELECT 1 as $DB_USER"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  service_status $NAME "SELECT 1 fails" "SELECT 1 answers on 127.0.0.1:$XRAYLAB_MARIADB_PORT" probe mariadb
}

service_main "$@"
