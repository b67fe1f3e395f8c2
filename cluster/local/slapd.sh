#!/usr/bin/env bash
# The project's own OpenLDAP directory (Debian's `slapd` 2.5): a demo hospital directory for directory sign-in
# (xraylab/directory.py). Static slapd.conf, MDB database, TLS files and slapd's own PID/args files under
# $STATE/slapd (mode 700; secrets 600), the recorded PID and the log in run/ as for the other services; never
# starts, stops or reads the system instance (/etc/ldap/slapd.d, /var/lib/ldap). Listens on 127.0.0.1 only:
# ldap:// on XRAYLAB_LDAP_PORT (StartTLS), ldaps:// on XRAYLAB_LDAPS_PORT.
# - TLS: a private CA and a server certificate for 127.0.0.1/localhost (made once; the CA's key is not kept);
#   the CA file's path goes into the env file as XRAYLAB_LDAP_CA_FILE. A simple bind (a password) needs TLS
#   (`security simple_bind=128`): on ldap:// without StartTLS the server answers confidentialityRequired.
#   No anonymous bind, and no operation at all before a bind (`require authc`).
# - Suffix dc=xraylab,dc=test. Root DN cn=admin,dc=xraylab,dc=test, its password generated once into the env
#   file (XRAYLAB_LDAP_ADMIN_PASSWORD) and only its {ARGON2} hash in slapd.conf. A read-only service account
#   cn=xraylab-reader,ou=services,dc=xraylab,dc=test (XRAYLAB_DIRECTORY_BIND_PASSWORD) may search people and
#   groups; users may only bind (userPassword: auth), and read nothing.
# - ppolicy overlay (its schema is built into the module in 2.5): `pwdAccountLockedTime: 000001010000Z` on an
#   entry disables it, the OpenLDAP way (2.5 honours it only where the policy says pwdLockout TRUE). The
#   default policy never locks an account for failed binds (pwdMaxFailure 0, no failure times recorded): the
#   review app throttles guessing itself, and a server lock would let anyone lock a doctor out. Cleartext
#   passwords written over LDAP are hashed by the server ({ARGON2}).
# - Seeded on first start (later, only entries gone missing are added again): ou=people, ou=groups,
#   ou=services, ou=policies; groups radiology-north, radiology-south, radiology-network, xraylab-admins;
#   users dr.north, dr.south, dr.network, dr.disabled (locked), it.admin, all with one generated password
#   (XRAYLAB_LDAP_DEMO_PASSWORD). At every start the service account's and the demo users' passwords are set
#   again from the env file (as mariadb.sh does).
# - $STATE/slapd/directory.toml: cluster/local/directory.toml with this stack's URL and CA file; the env file's
#   XRAYLAB_DIRECTORY_CONFIG names it (set once, unless already set), so the local stack's review app signs in
#   the directory's users.
# Usage: slapd.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=slapd
DIR="$STATE/slapd"
TLS="$DIR/tls"
SUFFIX="dc=xraylab,dc=test"
ADMIN_DN="cn=admin,$SUFFIX"
READER_DN="cn=xraylab-reader,ou=services,$SUFFIX"
DEMO_USERS=(dr.north dr.south dr.network dr.disabled it.admin)

# ensure_certs: a private CA and a server certificate for 127.0.0.1 and localhost (made once; both public, 644).
ensure_certs() {
  make_certs slapd "$TLS" server xraylab-ldap-ca 127.0.0.1 serverAuth "the directory's TLS certificates"
  chmod 644 "$TLS/ca.crt" "$TLS/server.crt"
}

# secret KEY: the env file's KEY, generated there first if missing.
secret() {
  local value; value="$(env_get "$1")"
  if [[ -z "$value" ]]; then value="$(random_secret)"; env_set "$1" "$value"; fi
  printf '%s' "$value"
}

# write_config ADMIN_PASSWORD: $DIR/slapd.conf (mode 600), written anew at every start; edits are lost.
write_config() {
  local hash
  hash="$("$(find_bin slappasswd)" -o module-path=/usr/lib/ldap -o module-load=argon2.la -h '{ARGON2}' \
    -T <(printf '%s' "$1"))" || die "slappasswd could not hash the admin password"
  (
    umask 077
    cat > "$DIR/slapd.conf.tmp" <<CONF
# Written by cluster/local/slapd.sh at every start; edits are lost.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb.la
moduleload ppolicy.la
moduleload argon2.la
pidfile $DIR/slapd.pid
argsfile $DIR/slapd.args
loglevel none
sizelimit 500
password-hash {ARGON2}
disallow bind_anon
require authc
# A password only over TLS (StartTLS or ldaps://): a simple bind needs a security strength factor of 128.
security simple_bind=128
TLSCACertificateFile $TLS/ca.crt
TLSCertificateFile $TLS/server.crt
TLSCertificateKeyFile $TLS/server.key
TLSProtocolMin 3.3
TLSVerifyClient never

database mdb
suffix "$SUFFIX"
rootdn "$ADMIN_DN"
rootpw $hash
directory $DIR/data
maxsize 1073741824
index objectClass eq
index uid eq
index member eq
overlay ppolicy
ppolicy_default "cn=default,ou=policies,$SUFFIX"
ppolicy_hash_cleartext
# Passwords: only to bind with. People and groups: read by the service account. Nothing else to anyone.
access to attrs=userPassword
  by anonymous auth
  by * none
access to dn.subtree="ou=people,$SUFFIX"
  by dn.exact="$READER_DN" read
  by * none
access to dn.subtree="ou=groups,$SUFFIX"
  by dn.exact="$READER_DN" read
  by * none
access to *
  by * none
CONF
  )
  "$(find_bin slaptest)" -Q -u -f "$DIR/slapd.conf.tmp" >"$RUN/slapd-config.log" 2>&1 \
    || { cat "$RUN/slapd-config.log" >&2; die "slaptest refused the generated slapd.conf"; }
  mv "$DIR/slapd.conf.tmp" "$DIR/slapd.conf"
}

# ldap TOOL DN PASSWORD ARGS...: an ldap-utils TOOL bound as DN over StartTLS (the CA checked), the password
# read from a pipe (never on a command line); /etc/ldap/ldap.conf is not read.
ldap() {
  local tool="$1" dn="$2" password="$3"; shift 3
  LDAPCONF=/dev/null LDAPTLS_CACERT="$TLS/ca.crt" LDAPTLS_REQCERT=demand \
    "$(find_bin "$tool")" -x -ZZ -H "ldap://127.0.0.1:$XRAYLAB_LDAP_PORT/" -o nettimeout=5 \
    -D "$dn" -y <(printf '%s' "$password") "$@"
}

# seed_ldif READER_PASSWORD: the demo tree as LDIF.
seed_ldif() {
  cat <<LDIF
dn: $SUFFIX
objectClass: dcObject
objectClass: organization
dc: xraylab
o: xraylab demo directory

dn: ou=people,$SUFFIX
objectClass: organizationalUnit
ou: people

dn: ou=groups,$SUFFIX
objectClass: organizationalUnit
ou: groups

dn: ou=services,$SUFFIX
objectClass: organizationalUnit
ou: services

dn: ou=policies,$SUFFIX
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,$SUFFIX
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE
pwdMaxFailure: 0
pwdMustChange: FALSE
pwdAllowUserChange: FALSE

dn: $READER_DN
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: xraylab-reader
description: xraylab's read-only service account: finds users and their groups
userPassword: $1

LDIF
  local user
  for user in "${DEMO_USERS[@]}"; do
    printf 'dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\ndisplayName: %s\n' \
      "$user" "$SUFFIX" "$user" "$user" "$user" "Demo user $user"
    if [[ "$user" == dr.disabled ]]; then printf 'pwdAccountLockedTime: 000001010000Z\n'; fi
    printf '\n'
  done
  cat <<LDIF
dn: cn=radiology-north,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: radiology-north
member: uid=dr.north,ou=people,$SUFFIX
member: uid=dr.disabled,ou=people,$SUFFIX

dn: cn=radiology-south,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: radiology-south
member: uid=dr.south,ou=people,$SUFFIX

dn: cn=radiology-network,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: radiology-network
member: uid=dr.network,ou=people,$SUFFIX

dn: cn=xraylab-admins,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: xraylab-admins
member: uid=it.admin,ou=people,$SUFFIX
LDIF
}

# missing_entries ADMIN_PASSWORD LDIF: the DNs of LDIF that the directory does not hold.
missing_entries() {
  local present
  present="$(ldap ldapsearch "$ADMIN_DN" "$1" -LLL -o ldif-wrap=no -b "$SUFFIX" dn 2>/dev/null | sed -n 's/^dn: //p')" \
    || true  # exit 32 (no such object) before the suffix entry exists
  sed -n 's/^dn: //p' <<<"$2" | grep -Fvx -f <(printf '%s\n' "$present") || true
}

# seed ADMIN_PASSWORD READER_PASSWORD: add the demo tree's missing entries (all on first start; idempotent: an
# entry already there is left as it is).
seed() {
  local ldif; ldif="$(seed_ldif "$2")"
  [[ -n "$(missing_entries "$1" "$ldif")" ]] || return 0
  log "seeding $SUFFIX (demo groups and users)"
  # -c: go on past the entries that exist; whatever is still missing afterwards is an error.
  ldap ldapadd "$ADMIN_DN" "$1" -c >"$RUN/slapd-seed.log" 2>&1 <<<"$ldif" || true
  local missing; missing="$(missing_entries "$1" "$ldif")"
  [[ -z "$missing" ]] || { tail -n 20 "$RUN/slapd-seed.log" >&2; die "seeding failed; missing: ${missing//$'\n'/; }"; }
}

# set_passwords ADMIN_PASSWORD READER_PASSWORD DEMO_PASSWORD: the service account's and the demo users' passwords
# (sent in clear over StartTLS; the ppolicy overlay stores their {ARGON2} hash), and dr.disabled's lock.
set_passwords() {
  local reader="$2" demo="$3"
  {
    printf 'dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: %s\n\n' "$READER_DN" "$reader"
    for user in "${DEMO_USERS[@]}"; do
      printf 'dn: uid=%s,ou=people,%s\nchangetype: modify\nreplace: userPassword\nuserPassword: %s\n\n' \
        "$user" "$SUFFIX" "$demo"
    done
    # A new password clears pwdAccountLockedTime (ppolicy): dr.disabled is locked again after it.
    printf 'dn: uid=dr.disabled,ou=people,%s\nchangetype: modify\nreplace: pwdAccountLockedTime\n%s\n\n' \
      "$SUFFIX" "pwdAccountLockedTime: 000001010000Z"
  } | ldap ldapmodify "$ADMIN_DN" "$1" >"$RUN/slapd-passwords.log" 2>&1 \
    || { cat "$RUN/slapd-passwords.log" >&2; die "could not set the directory's passwords"; }
}

# write_directory_config: the sample directory settings with this stack's URL and CA file.
write_directory_config() {
  { echo "# Written by cluster/local/slapd.sh at every start from cluster/local/directory.toml; edits are lost."
    sed -e "s|^url = .*|url = \"ldap://127.0.0.1:$XRAYLAB_LDAP_PORT\"|" -e "s|^ca_file = .*|ca_file = \"$TLS/ca.crt\"|" \
      "$LOCAL_DIR/directory.toml"; } > "$DIR/directory.toml.tmp"
  mv "$DIR/directory.toml.tmp" "$DIR/directory.toml"
}

# reader_probe: a search of ou=people as the service account over StartTLS (what status checks).
reader_probe() {
  [[ -f "$TLS/ca.crt" ]] || return 1
  ldap ldapsearch "$READER_DN" "$(env_get XRAYLAB_DIRECTORY_BIND_PASSWORD)" -LLL -b "ou=people,$SUFFIX" \
    -s base dn >/dev/null
}

start() {
  need_venv
  already_running $NAME reader_probe && return 0
  install_if_missing slapd slapd
  install_if_missing ldapsearch ldap-utils
  mkdir -p "$DIR/data"; chmod 700 "$DIR" "$DIR/data"
  ensure_certs
  env_set XRAYLAB_LDAP_CA_FILE "$TLS/ca.crt"
  local admin reader demo
  admin="$(secret XRAYLAB_LDAP_ADMIN_PASSWORD)"; reader="$(secret XRAYLAB_DIRECTORY_BIND_PASSWORD)"
  demo="$(secret XRAYLAB_LDAP_DEMO_PASSWORD)"
  write_config "$admin"
  port_free "$XRAYLAB_LDAP_PORT"; port_free "$XRAYLAB_LDAPS_PORT"
  log "starting slapd on ldap://127.0.0.1:$XRAYLAB_LDAP_PORT (StartTLS) and ldaps://127.0.0.1:$XRAYLAB_LDAPS_PORT"
  # -d stats: in the foreground (no fork, so the PID recorded is slapd's), connections and operations logged on
  # stderr (binds name their DN, never a password); `loglevel none` keeps it out of the system's syslog.
  "$(find_bin slapd)" -f "$DIR/slapd.conf" -d stats \
    -h "ldap://127.0.0.1:$XRAYLAB_LDAP_PORT/ ldaps://127.0.0.1:$XRAYLAB_LDAPS_PORT/" >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 30 ldap ldapwhoami "$ADMIN_DN" "$admin" || die "slapd did not answer a StartTLS bind"
  seed "$admin" "$reader"
  set_passwords "$admin" "$reader" "$demo"
  write_directory_config
  # Directory sign-in on for this stack (the review app reads the file at start), unless set to another directory.
  [[ -n "$(env_get XRAYLAB_DIRECTORY_CONFIG)" ]] || env_set XRAYLAB_DIRECTORY_CONFIG "$DIR/directory.toml"
  wait_ready $NAME 30 reader_probe || die "the directory's service account cannot search ou=people"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  service_status $NAME "the service account's search fails" \
    "the service account searches over StartTLS on 127.0.0.1:$XRAYLAB_LDAP_PORT" reader_probe
}

service_main "$@"
