#!/usr/bin/env bash
# Start or stop a real PyKMIP server (Debian's python3-pykmip) for the tests.
#
#   hack/kmip-server.sh start DIR   # certs (once), config, server; prints DIR/env
#   hack/kmip-server.sh stop DIR    # stops the server started in DIR
#   hack/kmip-server.sh status DIR  # exit 0 when it answers TLS
#
# DIR receives: ca.pem, server.{pem,key}, client.{pem,key} (CN=vtpm-agent, the
# KMIP object owner; extendedKeyUsage=clientAuth, which PyKMIP insists on with
# enable_tls_client_auth=True), server.conf, server.log, pykmip.db, pid, port,
# and env (VTPM_KMIP_HOST/PORT/CA/CERT/KEY, for `. DIR/env`).
# Start is idempotent: the certificates, the database and (if still free) the
# port survive a restart, so keys created before a stop are still there after
# the next start, at the same address.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|status DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
PY=/usr/bin/python3 # Debian's python: the pyenv python3 on PATH lacks python3-pykmip

gen_certs() {
  [ -s "$dir/client.pem" ] && return 0
  local t
  t=$(mktemp -d)
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vtpm-test-kmip-ca" \
      -keyout ca.key -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" >client.ext
    for who in server client; do
      local cn=localhost
      [ "$who" = client ] && cn=vtpm-agent
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$who.key" -out "$who.csr" 2>/dev/null
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$who.ext" -out "$who.pem" 2>/dev/null
    done
    chmod 600 ./*.key
    # The CA key is not needed afterwards: drop it so nothing else can be signed.
    cp ca.pem server.pem server.key client.key "$dir/"
    cp client.pem "$dir/client.pem.new"
  )
  mv "$dir/client.pem.new" "$dir/client.pem" # last: marks the set complete
  rm -rf "$t"
}

free_port() {
  local p
  # A restart keeps the port of the previous start when it is still free:
  # clients configured with it reconnect by themselves.
  for p in $(cat "$dir/port" 2>/dev/null) $(seq 15696 15796); do
    if ! ss -Htln "sport = :$p" | grep -q .; then
      echo "$p"
      return 0
    fi
  done
  echo "kmip-server: no free port in 15696..15796" >&2
  return 1
}

alive() {
  [ -s "$dir/pid" ] && kill -0 -- "-$(cat "$dir/pid")" 2>/dev/null
}

answers_tls() {
  [ -s "$dir/port" ] || return 1
  timeout 5 openssl s_client -connect "127.0.0.1:$(cat "$dir/port")" -tls1_2 \
    -CAfile "$dir/ca.pem" -cert "$dir/client.pem" -key "$dir/client.key" \
    -verify_return_error -brief </dev/null >/dev/null 2>&1
}

start() {
  gen_certs
  if alive && answers_tls; then
    echo "kmip-server: already running (pid $(cat "$dir/pid"), port $(cat "$dir/port"))"
    return 0
  fi
  local port
  port=$(free_port)
  echo "$port" >"$dir/port"
  cat >"$dir/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/server.pem
key_path=$dir/server.key
ca_path=$dir/ca.pem
auth_suite=TLS1.2
enable_tls_client_auth=True
database_path=$dir/pykmip.db
logging_level=INFO
EOF
  cat >"$dir/env" <<EOF
VTPM_KMIP_HOST=127.0.0.1
VTPM_KMIP_PORT=$port
VTPM_KMIP_CA=$dir/ca.pem
VTPM_KMIP_CERT=$dir/client.pem
VTPM_KMIP_KEY=$dir/client.key
export VTPM_KMIP_HOST VTPM_KMIP_PORT VTPM_KMIP_CA VTPM_KMIP_CERT VTPM_KMIP_KEY
EOF
  # pykmip-server's console script runs under Debian's python; call it through
  # that interpreter explicitly so PATH order does not matter.
  setsid "$PY" /usr/bin/pykmip-server -f "$dir/server.conf" -l "$dir/server.log" \
    >>"$dir/server.out" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local i
  for i in $(seq 1 150); do
    if answers_tls; then
      echo "kmip-server: listening on 127.0.0.1:$port (pid $(cat "$dir/pid"), ${i}x0.1s)"
      return 0
    fi
    if ! alive; then
      echo "kmip-server: exited during start-up; tail of $dir/server.log:" >&2
      tail -n 20 "$dir/server.log" "$dir/server.out" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  echo "kmip-server: not answering TLS after 15 s" >&2
  stop
  return 1
}

stop() {
  if ! alive; then
    rm -f "$dir/pid"
    return 0
  fi
  local pid
  pid=$(cat "$dir/pid")
  local marker="Stopping the operation policy file monitor" before
  before=$(grep -c "$marker" "$dir/server.log" 2>/dev/null || true)
  # setsid made the server a process-group leader; signal the group, since
  # PyKMIP forks helper processes (operation policy monitor) that outlive
  # their parent otherwise.
  kill -TERM -- "-$pid" 2>/dev/null || true
  # Its handler only sets a flag that the accept loop checks after the next
  # connection (Python retries the interrupted accept()): knock once.
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(cat "$dir/port")" 2>/dev/null || true
  # PyKMIP 0.10 then closes its sessions and socket within ~0.5 s but may
  # linger in its policy monitor. Every operation was already committed to
  # the SQLite database, so once the shutdown is logged (or after 5 s) the
  # remaining wait buys nothing: SIGKILL.
  local i
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    if [ "$(grep -c "$marker" "$dir/server.log" 2>/dev/null || true)" -gt "${before:-0}" ]; then
      break
    fi
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  echo "kmip-server: stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) alive && answers_tls ;;
  *)
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
    ;;
esac
