#!/usr/bin/env bash
# Bare swtpm baselines for `make bench` (issue 8, node path): the same kind
# of work the agent does for a VM's TPM, without the agent.
#   cold   swtpm_setup --tpm2 with EK and platform certificates (a private
#          local CA, warmed once so its key generation is not counted), then
#          `swtpm socket`, until the control channel answers CMD_GET_CAPABILITY
#   warm   `swtpm socket` on existing state until it answers
#   storm  N cold starts at once, until all N answer
# Each start is stopped cleanly (swtpm_ioctl -s) after it answered; the stop
# is not part of the time. Prints one JSON object:
#   {"cold_s":{median,min,max,runs}, "warm_s":{...}, "storm_s":X, "storm_n":N}
# Usage: swtpm-bare.sh WORKDIR [RUNS] [STORM_N]
set -euo pipefail
work=$1 runs=${2:-5} storm_n=${3:-20}
rm -rf "$work"; mkdir -p "$work/ca"
now() { date +%s%N; }

cat > "$work/ca/swtpm-localca.conf" <<EOC
statedir = $work/ca
signingkey = $work/ca/signkey.pem
issuercert = $work/ca/issuercert.pem
certserial = $work/ca/certserial
EOC
printf -- '--platform-manufacturer vtpm-bench\n--platform-version 2.1\n--platform-model QEMU\n' > "$work/ca/swtpm-localca.options"
cat > "$work/ca/swtpm_setup.conf" <<EOC
create_certs_tool = swtpm_localca
create_certs_tool_config = $work/ca/swtpm-localca.conf
create_certs_tool_options = $work/ca/swtpm-localca.options
active_pcr_banks = sha256
EOC

setup() { # DIR
  mkdir -p "$1"
  swtpm_setup --tpm2 --tpmstate "$1" --create-ek-cert --create-platform-cert --lock-nvram --not-overwrite \
    --config "$work/ca/swtpm_setup.conf" >"$1.setup.log" 2>&1
}
start() { # DIR: start swtpm, wait until the control channel answers
  swtpm socket --tpm2 --tpmstate dir="$1" --ctrl type=unixio,path="$1.ctrl" \
    --pid file="$1.pid" --log file="$1.log" --daemon
  local i
  for i in $(seq 2000); do
    swtpm_ioctl --unix "$1.ctrl" -c >/dev/null 2>&1 && return 0
    sleep 0.005
  done
  echo "swtpm on $1 never answered" >&2; return 1
}
stop() { swtpm_ioctl --unix "$1.ctrl" -s >/dev/null 2>&1 || true; }

stats() { # values (seconds) on stdin -> {"median":..,"min":..,"max":..,"runs":..}
  sort -g | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2;
    printf "{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f,\"runs\":%d}", m, v[1], v[NR], NR}'
}

# Warm the local CA (its first use generates the signing key).
setup "$work/warmup" && start "$work/warmup" && stop "$work/warmup"

cold=() warm=()
for i in $(seq "$runs"); do
  d=$work/cold-$i
  t0=$(now); setup "$d"; start "$d"; t1=$(now); stop "$d"
  cold+=("$(( t1 - t0 ))")
  sleep 0.2
  t0=$(now); start "$d"; t1=$(now); stop "$d"
  warm+=("$(( t1 - t0 ))")
done

t0=$(now)
pids=()
for i in $(seq "$storm_n"); do
  ( d=$work/storm-$i; setup "$d"; start "$d" ) &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
t1=$(now)
for i in $(seq "$storm_n"); do stop "$work/storm-$i"; done
[ "$fail" = 0 ] || { echo "a storm start failed" >&2; exit 1; }

printf '{"cold_s":%s,"warm_s":%s,"storm_s":%.3f,"storm_n":%d}\n' \
  "$(printf '%s\n' "${cold[@]}" | awk '{print $1/1e9}' | stats)" \
  "$(printf '%s\n' "${warm[@]}" | awk '{print $1/1e9}' | stats)" \
  "$(echo "$t0 $t1" | awk '{print ($2-$1)/1e9}')" "$storm_n"
