#!/usr/bin/env bash
# Issue 3, acceptance 1: a pkg/kube informer (build/tools/informer-probe)
# started on 2,000 ConfigMaps sees exactly what `kubectl get` sees; then 500
# creates, 500 updates and 500 deletes all reach its handlers, in order per
# object and with no duplicate callback: per key the resourceVersions strictly
# increase, ADD comes first, DELETE last, no (key, rv) pair twice; and the
# final cache equals the server's state.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/kube-probe.sh"

plan 17
setup_namespace e2e-kube-informer

# The 500 objects deleted later carry the label del=yes from their creation on
# (so one `kubectl delete -l` removes them): created+updated cm-2125..2249,
# created only cm-2250..2374, old+updated cm-125..249, old untouched cm-1750..1874.
gen_cms() { # PREFIX FROM TO VALUE: a v1 List of ConfigMaps PREFIX-FROM .. PREFIX-(TO-1)
  jq -n --arg p "$1" --argjson a "$2" --argjson b "$3" --arg v "$4" \
    '{apiVersion: "v1", kind: "List", items: [range($a; $b) as $i |
      {apiVersion: "v1", kind: "ConfigMap",
       metadata: {name: "\($p)-\($i)", labels: {del: (if ($i >= 2125 and $i < 2375) or ($i >= 125 and $i < 250) or
                                                          ($i >= 1750 and $i < 1875) then "yes" else "no" end)}},
       data: {v: $v}}]}'
}
names() { local p=$1 a=$2 b=$3 i; for ((i = a; i < b; i++)); do echo "$p-$i"; done; }

# Four kubectl in parallel: the API server, not kubectl, should be the limit.
ok "create 2,000 ConfigMaps (kubectl create of generated Lists)" \
  bash -c "$(declare -f gen_cms); pids=; for i in 0 1 2 3; do
    gen_cms cm \$((i * 500)) \$((i * 500 + 500)) 0 | kubectl -n $NS create -f - >/dev/null & pids=\"\$pids \$!\"
  done; rc=0; for p in \$pids; do wait \$p || rc=1; done; exit \$rc"

probe_start /v1/configmaps "$NS"
wait_until 60 grep -q '^SYNCED ' "$PROBE_OUT" && pass "the informer synced" ||
  fail "the informer synced" "$(tail -5 "$PROBE_ERR")"

server=$(server_state configmaps)
is "$(grep '^SYNCED ' "$PROBE_OUT")" "SYNCED $(wc -l <<<"$server")" "SYNCED count equals kubectl's ($(wc -l <<<"$server") incl. kube-root-ca.crt)"
is "$(probe_dump)" "$server" "the cache holds exactly kubectl's set: same keys, same resourceVersions"
is "$(grep -c '^ADD ' "$PROBE_OUT")" "$(wc -l <<<"$server")" "one ADD per listed object, nothing else yet"

# The changes, one batch after another so every key's order is known.
ok "500 creates (cm-2000..2499)" bash -c "$(declare -f gen_cms); gen_cms cm 2000 2500 0 | kubectl -n $NS create -f - >/dev/null"
ok "500 updates (cm-2000..2249, cm-0..249)" bash -c "$(declare -f gen_cms)
  { gen_cms cm 2000 2250 1; gen_cms cm 0 250 1; } | jq -s '{apiVersion: \"v1\", kind: \"List\", items: (map(.items) | add)}' |
    kubectl -n $NS replace -f - >/dev/null"
deleted=$( { names cm 2125 2250; names cm 2250 2375; names cm 125 250; names cm 1750 1875; } )
ok "500 deletes (created+updated, created only, old+updated, old untouched)" \
  kubectl -n "$NS" delete configmap -l del=yes --wait=false
is "$(k get cm -l del=yes -o name | wc -l)" 0 "... all gone"

server=$(server_state configmaps)
is "$(wc -l <<<"$server")" 2001 "the server holds 2,001 ConfigMaps afterwards"
if wait_until 60 probe_matches configmaps; then pass "the cache converges on the server's state (keys and resourceVersions)"
else fail "the cache converges on the server's state (keys and resourceVersions)" \
  "$(diff <(probe_dump) <(server_state configmaps) | head -20)"; fi

# Per-key history of every handler call since the start.
hist=$(awk -f "$PROBE_CHECK_AWK" "$PROBE_OUT" 2>&1)
is "$(grep '^BAD' <<<"$hist" | head -10)" "" "per key: ADD first, DELETE last, rv strictly increasing, UPDATE's old rv is the last seen, no (key, rv) twice"
is "$(grep '^COUNT' <<<"$hist")" "COUNT add=2501 update=500 delete=500" "exactly 2,001 + 500 ADDs, 500 UPDATEs, 500 DELETEs: no duplicate callback"
is "$(sed -n 's/^UPDATED //p' <<<"$hist" | sort)" "$( { names cm 2000 2250; names cm 0 250; } | sed "s|^|$NS/|" | sort)" \
  "UPDATEs went to exactly the 500 updated keys"
is "$(sed -n 's/^DELETED //p' <<<"$hist" | sort)" "$(sed "s|^|$NS/|" <<<"$deleted" | sort)" \
  "DELETEs went to exactly the 500 deleted keys"
is "$(awk '/^SYNCED/{s=1; next} s && $1=="ADD"{print $2}' "$PROBE_OUT" | sort)" "$(names cm 2000 2500 | sed "s|^|$NS/|" | sort)" \
  "ADDs after the sync are exactly the 500 created keys"

# All of it came through the one watch: no relist, no reconnect, 1,500 events.
st=$(probe_stats)
is "$(jq -c '{lists, relistsGone, resumes, watches, events}' <<<"$st")" \
  '{"lists":1,"relistsGone":0,"resumes":0,"watches":1,"events":1500}' \
  "one LIST, one WATCH, 1,500 watch events (informer stats)"
