#!/usr/bin/env bash
# Issue 22: live migration of a VM with a persistent, encrypted vTPM on real
# KubeVirt (virtctl migrate), the agent installed as shipped with its Plugin,
# Debian's swtpm 0.7.1. The TPM guest seals a secret on node-1 and then
# unseals it again every 2 s while it runs (tpmguest.loop), so a running
# guest's TPM is checked across every migration:
#   1. migrate to node-2, the guest unseals there without a reboot; back to
#      node-1 (an upstream bug once broke the second migration), unseals;
#      each hand-over switches the state volume to the target's generation
#      and moves the state lock; after a stop and start it still unseals;
#   2. a migration cancelled mid-flight (slowed by a MigrationPolicy, then
#      virtctl migrate-cancel): the VM runs on and unseals on its source, the
#      state is exactly as it was; the next migration succeeds;
#   3. a watcher on the host records every process holding a state file open
#      and every write: no file is ever open in two processes, each
#      generation has one swtpm, nothing writes the source's generation after
#      the switch;
#   4. a VM with an idle TPM and one without a TPM migrate in the same run,
#      VTPM_MIGRATION_ROUNDS times each (default 3): migration time and the
#      guest's downtime with and without the TPM (KubeVirt's own figures: the
#      source launcher's "Migration info" line), in $VTPM_RUN/migration-results.txt;
#   5. the key server down (vtpm-controller, the key broker, scaled to 0):
#      the target refuses with KeyProviderUnavailable, KubeVirt's event on
#      the VMI says so, the running VM is unaffected and the migration waits;
#      with the server back it completes. Another one, cancelled while the
#      server is down: the VM stays, its state as it was.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
rounds=${VTPM_MIGRATION_ROUNDS:-3}
plan $((48 + 2 * rounds))
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)
other() { if [ "$1" = "$n1" ]; then echo "$n2"; else echo "$n1"; fi; }
rn_agent_on_kubevirt_up 10m
broker() { kubectl -n "$RN_NS" scale deploy vtpm-controller --replicas="$1" >/dev/null; }
at_exit "broker 1"
results=${VTPM_MIGRATION_RESULTS:-$VTPM_RUN/migration-results.txt}
: > "$results"

vm=mguest plain=mplain idle=midle
tpmstate() { k get tpmstate "$vm" -o jsonpath="{$1}" 2>/dev/null; }
vmi_field() { k get vmi "$1" -o jsonpath="$2" 2>/dev/null; }
why_not() {
  diag "VMI: $(vmi_field "$1" '{.status.phase} {.status.nodeName} {.status.migrationState}' | head -c 900)"
  diag "TPMState nodeState: $(tpmstate .status.nodeState)"
  diag "events: $(k get events --sort-by=.lastTimestamp -o jsonpath='{range .items[*]}{.involvedObject.name} {.reason}: {.message}{"\n"}{end}' | tail -8 | cut -c1-300)"
  diag "migrations: $(k get vmim -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase}{"\n"}{end}')"
  # What virt-handler on each node last failed at for this VMI (its log's reasons).
  local n p
  for n in "$n1" "$n2"; do
    p=$(kubectl -n kubevirt get pod -l kubevirt.io=virt-handler --field-selector spec.nodeName="$n" -o name | head -1)
    diag "virt-handler on $n: $(kubectl -n kubevirt logs "$p" -c virt-handler --since=10m 2>/dev/null |
      grep "\"name\":\"$1\"" | grep -o '"reason":"[^"]*' | cut -c11-220 | uniq | tail -6 | tr '\n' '|')"
  done
}
# Guests printing "unsealed#K SECRET uptime=U" every 2 s (tpmguest.loop=2).
# The launcher the VM runs in: during a migration its target runs too.
vm_pod() {
  k get pod -l "kubevirt.io=virt-launcher,vm.kubevirt.io/name=$1" -o name \
    --field-selector "status.phase=Running,spec.nodeName=$(vmi_field "$1" '{.status.nodeName}')" | head -1
}
last_unseal() { k logs "$(vm_pod "$1")" -c guest-console-log 2>/dev/null | grep -o 'TPM-GUEST: unseal.*' | tr -d '\r' | tail -1; }
uptime_of() { sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' <<< "$1"; }
# unseals_after VM UPTIME: a new "unsealed#K <secret>" line later than UPTIME.
unseals_after() {
  local l; l=$(last_unseal "$1")
  [[ $l == "TPM-GUEST: unsealed#"*" $secret uptime="* ]] && awk -v a="$(uptime_of "$l")" -v b="$2" 'BEGIN { exit !(a > b) }'
}
# A VM that prefers node-1 (no nodeSelector: that would pin the migration target too).
guest_vm() { # NAME ARGS TPM
  rn_guest_vm "$NS" "$1" "$n1" "$2" "$3" &&
  k patch vm "$1" --type json -p '[{"op":"remove","path":"/spec/template/spec/nodeSelector"},
    {"op":"add","path":"/spec/template/spec/affinity","value":{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[
      {"weight":100,"preference":{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"In","values":["'"$n1"'"]}]}}]}}}]' >/dev/null
}
vol_of() { echo "$T/store/$(k get pvc "$(tpmstate .status.pvcName)" -o jsonpath='{.spec.volumeName}')"; }
current_gen() { cat "$vol/vtpm-current" 2>/dev/null || echo "(root)"; }

# migrate VM DESC TPM: virtctl migrate, then migration_done.
migrate() { migration_start "$1" && migration_done "$1" "$mig_name" "$2" "$3"; }
# migration_start VM: `virtctl migrate VM`; sets mig_name to the
# VirtualMachineInstanceMigration it created (KubeVirt names it).
migration_start() {
  local v=$1 before
  before=$(k get vmim -l "kubevirt.io/vmi-name=$v" -o name)
  mig_name=
  virtctl migrate "$v" >/dev/null || { diag "virtctl migrate $v failed"; return 1; }
  # (bash's dynamic scope: $v and $before are migration_start's here)
  _new_vmim() { mig_name=$(k get vmim -l "kubevirt.io/vmi-name=$v" -o name | grep -vxF -e "$before" | head -1); [ -n "$mig_name" ]; }
  wait_until 30 _new_vmim || { diag "virtctl migrate $v made no VirtualMachineInstanceMigration"; return 1; }
  _new_vmim; mig_name=${mig_name#*/}
}
# migration_done VM NAME DESC TPM: the VMI Running on the other node with
# migrationState completed for migration NAME. Sets mig_uid, mig_ms
# (migration time from KubeVirt's timestamps) and mig_down (the guest's
# downtime, from the source launcher's "Migration info" line); appends them
# to $results with TPM (busy: unsealing every 2 s, idle, or none).
migration_done() {
  local v=$1 name=$2 desc=$3 from to src_pod
  from=$(vmi_field "$v" '{.status.nodeName}') to=$(other "$from")
  src_pod=$(vm_pod "$v"); src_pod=${src_pod#pod/}
  local info_before
  info_before=$(kubectl -n "$NS" logs "$src_pod" -c compute 2>/dev/null | grep -c 'Migration info for [^"]*Downtime:[0-9]*ms')
  _done() { [ "$(vmi_field "$v" '{.status.migrationState.completed}/{.status.nodeName}/{.status.migrationState.failed}')" = "true/$to/" ] &&
            [ "$(vmi_field "$v" '{.status.migrationState.migrationUid}')" = "$(k get vmim "$name" -o jsonpath='{.metadata.uid}')" ]; }
  if wait_until 300 _done; then pass "$desc ($from -> $to)"; else fail "$desc ($from -> $to)"; why_not "$v"; mig_uid=; return 1; fi
  mig_uid=$(k get vmim "$name" -o jsonpath='{.metadata.uid}')
  local s e
  s=$(date -d "$(vmi_field "$v" '{.status.migrationState.startTimestamp}')" +%s)
  e=$(date -d "$(vmi_field "$v" '{.status.migrationState.endTimestamp}')" +%s)
  mig_ms=$(( (e - s) * 1000 ))
  # The source's own line for this migration: a launcher that was a target
  # before has that earlier migration's line too.
  _info() { k logs "$src_pod" -c compute 2>/dev/null | grep -o 'Migration info for [^"]*Downtime:[0-9]*ms' | tail -1; }
  wait_until 30 sh -c "[ \$(kubectl -n $NS logs $src_pod -c compute 2>/dev/null | grep -c 'Migration info for [^\"]*Downtime:[0-9]*ms') -gt $info_before ]"
  mig_down=$(_info | sed -n 's/.* Downtime:\([0-9]*\)ms.*/\1/p')
  diag "migration $name: ${mig_ms} ms (timestamps, 1 s resolution); downtime ${mig_down:-?} ms: $(_info | cut -c1-240)"
  echo "$v tpm=$4 migration_ms=$mig_ms downtime_ms=${mig_down:-?} $from->$to" >> "$results"
}

# ---- 1. seal on node-1, migrate there and back ----
secret=m1g-$RANDOM$RANDOM
guest_vm "$vm" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.loop=2" persistent
guest_vm "$plain" "console=ttyS0 quiet tpmguest.stay=1" none
guest_vm "$idle" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.stay=1" persistent
for v in "$vm" "$plain" "$idle"; do virtctl start "$v" >/dev/null; done
if wait_until 300 rn_vmi_on "$NS" "$vm" "$n1"; then pass "the TPM guest runs on $n1"; else fail "the TPM guest runs on $n1"; why_not "$vm"; fi
ok "the guest sealed a secret and unseals it every 2 s" wait_until 180 unseals_after "$vm" 0
jwe=$(rn_vm_console "$NS" "$vm" | sed -n 's/^TPM-GUEST: sealed //p' | head -1)
vol=$(vol_of)
is "$(current_gen)" "(root)" "before any migration the state is at the volume's root"
before=$(uptime_of "$(last_unseal "$vm")")
python3 "$E2E_TOP/test/e2e/state-watch.py" watch "$vol" "$T/watch.log" &
watcher=$!
at_exit "kill $watcher 2>/dev/null"

migrate "$vm" "virtctl migrate: the TPM VM migrates" busy
m1=$mig_uid
ok "on $n2 the running guest unseals its secret again (no reboot: uptime goes on from $before s)" \
  wait_until 120 unseals_after "$vm" "$before"
is "$(current_gen)" "m-$m1" "the state volume's current generation is the target's (m-<migration uid>)"
_handed() { [ "$(tpmstate .status.nodeState.reason)/$(tpmstate .status.nodeState.node)" = "StateHandedOver/$n2" ]; }
ok "TPMState: StateHandedOver on $n2" wait_until 60 _handed
_lease_on() { kubectl -n "$RN_NS" get lease "vtpm-state-$(k get vm "$vm" -o jsonpath='{.metadata.uid}')" \
                -o jsonpath='{.spec.holderIdentity}' | grep -q "^$1/"; }
ok "the VM's state lock is held by $n2's launcher" wait_until 60 _lease_on "$n2"
events=$(k get events --field-selector involvedObject.name="$vm" -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}')
for r in MigrationTargetReady StateHandedOver; do
  like "$events" "$r" "event $r on the VM"
done

before=$(uptime_of "$(last_unseal "$vm")")
migrate "$vm" "a second migration, back" busy
m2=$mig_uid
ok "back on $n1 the guest unseals again" wait_until 120 unseals_after "$vm" "$before"
is "$(current_gen)" "m-$m2" "the current generation is the second target's"
ok "TPMState: StateHandedOver on $n1" wait_until 60 sh -c "[ \"\$(kubectl -n $NS get tpmstate $vm -o jsonpath='{.status.nodeState.reason}/{.status.nodeState.node}')\" = StateHandedOver/$n1 ]"
_pruned() { [ ! -e "$vol/m-$m1" ]; }
ok "the first target's generation (the second's source) was removed after the hand-over" wait_until 60 _pruned

# ---- 3. the watcher's record of both migrations ----
sleep 3
kill "$watcher"; wait "$watcher" 2>/dev/null
python3 "$E2E_TOP/test/e2e/state-watch.py" report "$T/watch.log" > "$T/watch.json"
diag "watcher: $(jq -c '{samples, holders, writes}' "$T/watch.json" | cut -c1-900)"
is "$(jq -c .overlaps "$T/watch.json")" "[]" "no state file was ever open in two processes at once"
# (The agent reads it too, briefly, to seed the next generation from it.)
is "$(jq -r --arg d "m-$m1" '.holders[$d] | map(.[1]) | unique - ["vtpm-agent"] | join(",")' "$T/watch.json")" "swtpm" \
  "generation m-$m1 was held by swtpm processes only (besides the agent)"
is "$(jq -r '[.holders["."][]? | select(.[1] == "swtpm")] | length' "$T/watch.json")" "1" \
  "the root generation had one swtpm (the first source's)"
# The source's generation is never written after the switch to the target's.
switch1=$(awk -v g="m-$m1" '$2 == "WRITE" && $3 == "vtpm-current" { print $1; exit }' "$T/watch.log")
# (The marker and its temporary file are the volume's, not the root generation's.)
late=$(awk -v s="$switch1" '$2 == "WRITE" && $3 !~ /\// && $3 !~ /^vtpm-current/ && $1 > s + 0.2 { print }' "$T/watch.log" | head -3)
is "$late" "" "nothing wrote the root generation after the first switch (at $switch1)"
# The first target's swtpm processes (the check that its seeded copy loads,
# then its vTPM) all came before the hand-over: no swtpm started on that
# generation after it (a launcher whose swtpm ended must never get a second).
late=$(awk -v g="m-$m1/" -v s="$switch1" '$2 == "OPEN" && index($5, g) == 1 && !($3 in first) { first[$3] = $1 }
  END { for (p in first) if (first[p] > s) print p }' "$T/watch.log")
is "$late" "" "no swtpm came to generation m-$m1 after its hand-over (at $switch1)"
first_target=$(awk -v g="m-$m1/" '$2 == "WRITE" && index($3, g) == 1 { print $1; exit }' "$T/watch.log")
diag "first write in m-$m1: $first_target; switch: $switch1"

# ---- stop and start ----
virtctl stop "$vm" >/dev/null
wait_until 180 rn_vmi_gone "$NS" "$vm"
k patch vm "$vm" --type json -p "[{\"op\":\"replace\",\"path\":\"/spec/template/spec/domain/firmware/kernelBoot/kernelArgs\",
  \"value\":\"console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.loop=2\"}]" >/dev/null
virtctl start "$vm" >/dev/null
if wait_until 300 sh -c "[ \"\$(kubectl -n $NS get vmi $vm -o jsonpath='{.status.phase}')\" = Running ]"; then
  pass "started again after the migrations"; else fail "started again after the migrations"; why_not "$vm"; fi
ok "after a stop and start the guest unseals the secret (generation m-$m2)" wait_until 180 unseals_after "$vm" 0
rn_state_loads "$vol/m-$m2/tpm2-00.permall"
is "$?" 1 "the migrated state is ciphertext: a bare swtpm without the key cannot load it"

# ---- 5. the key server down ----
# Right after the stop and start: a new VMI, so neither node's virt-handler
# has a launcher of it from an aborted migration (see the README on a stale
# launcher client, which stalled this migration once when it came after the
# cancelled one of section 2).
# The node agents get a VM's key from the key broker (vtpm-controller), which
# holds the key provider's credentials: scaled to 0, no node can unwrap a key.
_broker_gone() { [ -z "$(kubectl -n "$RN_NS" get pods -l app.kubernetes.io/name=vtpm-controller -o name)" ]; }
# _refused MIGRATION: KubeVirt's migrationState names that migration, and
# TPMState's nodeState has the agent's refusal for its target launcher.
_refused() {
  local pod; pod=$(vmi_field "$vm" '{.status.migrationState.targetPod}')
  [ -n "$pod" ] && [ "$(vmi_field "$vm" '{.status.migrationState.migrationUid}')" = "$(k get vmim "$1" -o jsonpath='{.metadata.uid}')" ] &&
  [ "$(tpmstate .status.nodeState.reason)/$(tpmstate .status.nodeState.node)/$(tpmstate .status.nodeState.launcher)" = "KeyProviderUnavailable/$dst/$NS/$pod" ]
}
broker 0
ok "the key server is down (vtpm-controller scaled to 0)" wait_until 120 _broker_gone
src=$(vmi_field "$vm" '{.status.nodeName}') dst=$(other "$src")
before=$(uptime_of "$(last_unseal "$vm")")
migration_start "$vm"; later=$mig_name
ok "a migration while the key server is down: its target refuses, TPMState says KeyProviderUnavailable from $dst" \
  wait_until 120 _refused "$later" || why_not "$vm"
# virt-handler's event for the failed PreMigrationTarget hook carries the agent's answer.
_hook_says() { k get events --field-selector involvedObject.kind=VirtualMachineInstance,involvedObject.name="$vm" \
                 -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep -q "vtpm-agent.*KeyProviderUnavailable"; }
ok "KubeVirt's event on the VMI names the reason (the PreMigrationTarget hook's answer)" wait_until 90 _hook_says || why_not "$vm"
ok "the running VM is unaffected: still on $src, still unsealing" wait_until 60 unseals_after "$vm" "$before"
is "$(vmi_field "$vm" '{.status.migrationState.completed}')/$(vmi_field "$vm" '{.status.nodeName}')" "/$src" \
  "the migration waits: the VM is not moved to a TPM it cannot load"
broker 1
migration_done "$vm" "$later" "the key server back: the waiting migration completes" busy
ok "and the guest unseals on the target" wait_until 120 unseals_after "$vm" "$before"

# ---- 2. a migration cancelled mid-flight ----
k apply -f - >/dev/null <<EOF
apiVersion: migrations.kubevirt.io/v1alpha1
kind: MigrationPolicy
metadata: {name: $NS-slow}
spec:
  bandwidthPerMigration: 1Mi
  selectors:
    namespaceSelector: {kubernetes.io/metadata.name: $NS}
EOF
at_exit "kubectl delete migrationpolicy $NS-slow --ignore-not-found >/dev/null 2>&1"
src=$(vmi_field "$vm" '{.status.nodeName}')
gen_before=$(current_gen)
before=$(uptime_of "$(last_unseal "$vm")")
migration_start "$vm"; cancelled=$mig_name
_running() { [ "$(k get vmim "$cancelled" -o jsonpath='{.status.phase}')" = Running ]; }
ok "a slowed migration (1 MiB/s) is running" wait_until 180 _running
virtctl migrate-cancel "$vm" >/dev/null 2>&1 || k delete vmim "$cancelled" --wait=false >/dev/null
_aborted() { [ "$(vmi_field "$vm" '{.status.migrationState.failed}')" = true ] || [ "$(vmi_field "$vm" '{.status.migrationState.abortStatus}')" = Succeeded ]; }
ok "virtctl migrate-cancel: the migration is aborted" wait_until 180 _aborted
ok "the VM still runs on its source $src" rn_vmi_on "$NS" "$vm" "$src"
ok "and the guest still unseals there" wait_until 60 unseals_after "$vm" "$before"
is "$(current_gen)" "$gen_before" "the current generation is still the source's ($gen_before)"
k delete migrationpolicy "$NS-slow" >/dev/null
before=$(uptime_of "$(last_unseal "$vm")")
migrate "$vm" "after the cancelled one, a migration succeeds" busy
ok "the guest unseals after it" wait_until 120 unseals_after "$vm" "$before"
# The cancelled target's generation goes with its launcher where the volume is
# still published there, else with this hand-over: only the current one stays.
_only_current() { [ "$(ls -d "$vol"/m-* 2>/dev/null)" = "$vol/$(current_gen)" ]; }
ok "only the current generation is left on the volume (the cancelled target's is gone)" wait_until 60 _only_current

# ---- 5, continued: a migration cancelled while the key server is down ----
# A migration cancelled while the key server is down. KubeVirt acts on a
# cancel (virtctl migrate-cancel) only once the migration runs; one still
# preparing its target ends when the target launcher does (by itself after
# virt-launcher's QEMU timeout, about 4 min): cancelled here, and its
# launcher deleted.
broker 0
wait_until 120 _broker_gone
src=$(vmi_field "$vm" '{.status.nodeName}') dst=$(other "$src")
gen_before=$(current_gen)
before=$(uptime_of "$(last_unseal "$vm")")
migration_start "$vm"; down=$mig_name
ok "another migration with the key server down: KeyProviderUnavailable from $dst" wait_until 120 _refused "$down"
target=$(vmi_field "$vm" '{.status.migrationState.targetPod}')
virtctl migrate-cancel "$vm" >/dev/null 2>&1 || k delete vmim "$down" --wait=false >/dev/null
k delete pod "$target" --wait=false >/dev/null
_cancelled() { [ "$(vmi_field "$vm" '{.status.migrationState.failed}')" = true ]; }
ok "cancelled (its target launcher deleted): the migration failed" wait_until 180 _cancelled
ok "the VM stays on $src" rn_vmi_on "$NS" "$vm" "$src"
ok "and unseals there" wait_until 60 unseals_after "$vm" "$before"
is "$(current_gen)" "$gen_before" "the current generation is as it was ($gen_before)"
broker 1

# ---- 4. the same without a TPM, and the downtime ----
# Three VMs from one image: the TPM guest above (unsealing every 2 s: a
# migration may wait for a TPM command in flight), one with a persistent TPM
# it does not use after sealing (idle), one without a TPM. The idle one and
# the one without a TPM take turns, $rounds migrations each.
for v in "$plain" "$idle"; do
  if wait_until 300 sh -c "[ \"\$(kubectl -n $NS get vmi $v -o jsonpath='{.status.phase}')\" = Running ]"; then
    pass "$v runs"; else fail "$v runs"; why_not "$v"; fi
done
ok "$idle sealed its secret (and leaves its TPM idle)" wait_until 180 rn_vm_said "$NS" "$idle" "sealed "
for r in $(seq "$rounds"); do
  migrate "$idle" "the VM with an idle TPM migrates ($r/$rounds)" idle
  migrate "$plain" "the VM without a TPM migrates ($r/$rounds)" none
done
# Medians per kind, for the README (no timing is asserted: TCG is noisy).
for kind in busy idle none; do
  diag "downtime, TPM $kind: $(awk -v k="tpm=$kind" '$2 == k { sub("downtime_ms=", "", $4); print $4 }' "$results" | sort -n |
    awk '{ a[NR] = $1 } END { if (NR) printf "median %s ms, min %s, max %s, n=%d", a[int((NR + 1) / 2)], a[1], a[NR], NR }')"
done

diag "results: $(tr '\n' ';' < "$results")"
