#!/usr/bin/env bash
# Issue 10: VMs that take their TPM from a KubeVirt preference, and the
# HyperConverged state-class setting (OpenShift's workflow).
#  - windows.11 (cluster and namespaced preference) gives a VM without a tpm
#    of its own a state PVC; the VM's own tpm (persistent: false,
#    enabled: false) wins over the preference;
#  - a VM bound to a ControllerRevision keeps the frozen preference after the
#    live one drops persistent; an unbound VM follows (state Retained);
#  - HyperConverged spec.vmStateStorageClass decides, the KubeVirt CR wins;
#  - a missing preference: Warning PreferenceNotFound, served once it exists;
#  - a CDI StorageProfile without RWX+Filesystem: Warning StorageClassNotRWX,
#    the PVC is provisioned in that class anyway;
#  - 300 VMs sharing a preference: the agent's requests on preferences
#    (audit log) do not grow.
. "$(dirname "$0")/lib.sh"
# Sort first: with several KubeVirt CRs the alphabetically first decides.
setup_namespace 00e2e-70
. "$(dirname "$0")/lib-agent.sh"

plan 50

s=$(tr -dc 'a-z0-9' < /dev/urandom | head -c 6)
c_hco=00-e2e70-$s-hco c_kv=00-e2e70-$s-kubevirt c_rwo=00-e2e70-$s-rwo
shared=00e2e70-$s-shared
# The suite's own windows.11 (as upstream ships it): KubeVirt's virt-operator
# installs and keeps a windows.11 of its own (common-instancetypes), which a
# test must neither delete nor edit.
P=00e2e70-$s-windows.11
HCO_NS=openshift-cnv

# ---- helpers ----
# pvm_yaml NAME PREFERENCE-FLOW-MAPPING [TPM-FLOW-MAPPING]
pvm_yaml() {
  local name=$1 pref=$2 tpm=${3:-}
  echo "---"
  echo "apiVersion: kubevirt.io/v1"
  echo "kind: VirtualMachine"
  echo "metadata: {name: $name, namespace: $NS}"
  echo "spec:"
  echo "  runStrategy: Halted"
  echo "  preference: $pref"
  # What windows.11's requirements ask (2 vCPUs, 4Gi): KubeVirt's webhook
  # refuses a VM that provides less than its preference requires.
  local res="cpu: {sockets: 2}, memory: {guest: 4Gi}"
  if [ -n "$tpm" ]; then
    echo "  template: {spec: {domain: {$res, devices: {tpm: $tpm}}}}"
  else
    echo "  template: {spec: {domain: {$res, devices: {}}}}"
  fi
}
pvm() { k apply -f - >/dev/null <<<"$(pvm_yaml "$@")"; }
# windows.11 as upstream's common-instancetypes ship it (abridged), KIND
# cluster or namespaced.
win11_yaml() {
  local kind=$1 name=$2 md="{name: $2}"
  [ "$kind" = VirtualMachineClusterPreference ] || md="{name: $name, namespace: $NS}"
  cat <<YAML
apiVersion: instancetype.kubevirt.io/v1beta1
kind: $kind
metadata: $md
spec:
  clock:
    preferredClockOffset: {utc: {}}
    preferredTimer: {hpet: {present: false}, hyperv: {}, pit: {tickPolicy: delay}, rtc: {tickPolicy: catchup}}
  cpu: {preferredCPUTopology: sockets}
  devices:
    preferredAutoattachInputDevice: true
    preferredDiskBus: sata
    preferredInputBus: usb
    preferredInputType: tablet
    preferredInterfaceModel: e1000e
    preferredTPM: {persistent: true}
  features:
    preferredAcpi: {}
    preferredApic: {}
    preferredHyperv: {relaxed: {}, spinlocks: {spinlocks: 8191}, vapic: {}, vpindex: {}, synic: {}, synictimer: {direct: {}}, frequencies: {}, tlbflush: {}, reset: {}, ipi: {}, runtime: {}}
    preferredSmm: {}
  firmware: {preferredUseEfi: true, preferredUseSecureBoot: true}
  requirements: {cpu: {guest: 2}, memory: {guest: 4Gi}}
YAML
}
has_pvc() { k get pvc "persistent-state-for-$1" >/dev/null 2>&1; }
pvc_class() { k get pvc "persistent-state-for-$1" -o jsonpath='{.spec.storageClassName}' 2>/dev/null; }
ts_field() { k get tpmstate "$1" -o jsonpath="$2" 2>/dev/null; }
ts_phase() { ts_field "$1" '{.status.phase}'; }
phase_is() { [ "$(ts_phase "$1")" = "$2" ]; }
count_is() { [ "$(event_count "$1" "$2")" -eq "$3" ]; }
ready_reason() { ts_field "$1" '{.status.conditions[?(@.type=="Ready")].reason}'; }
gen() { k get vm "$1" -o jsonpath='{.metadata.generation}'; }
observed_current() { [ "$(ts_field "$1" '{.status.observedGeneration}')" = "$(gen "$1")" ]; }
wait_pvc() {
  local vm=$1 desc=$2
  if wait_until "${3:-30}" has_pvc "$vm"; then pass "$desc"; else
    fail "$desc" "TPMState: $(k get tpmstate "$vm" -o jsonpath='{.status}' 2>&1)" "events: $(events_for "$vm")"
  fi
}

# ---- set-up: classes, StorageProfiles, HyperConverged namespace ----
classes() { testbed_class "$c_hco" && testbed_class "$c_kv" && testbed_class "$c_rwo"; }
ok_here "three StorageClasses (HyperConverged, KubeVirt, RWO-only)" classes
profiles() {
  local c sets
  for c in "$c_kv" "$c_rwo"; do
    kubectl create -f - >/dev/null <<<"{\"apiVersion\":\"cdi.kubevirt.io/v1beta1\",\"kind\":\"StorageProfile\",\"metadata\":{\"name\":\"$c\"},\"spec\":{}}" || return 1
    at_exit "kubectl delete storageprofile $c --ignore-not-found --wait=false >/dev/null 2>&1"
  done
  sets='{"status":{"claimPropertySets":[{"accessModes":["ReadWriteOnce"],"volumeMode":"Filesystem"},{"accessModes":["ReadWriteMany"],"volumeMode":"Block"}]}}'
  kubectl patch storageprofile "$c_rwo" --subresource=status --type merge -p "$sets" >/dev/null || return 1
  sets='{"status":{"claimPropertySets":[{"accessModes":["ReadWriteOnce"],"volumeMode":"Block"},{"accessModes":["ReadWriteMany"],"volumeMode":"Filesystem"}]}}'
  kubectl patch storageprofile "$c_kv" --subresource=status --type merge -p "$sets" >/dev/null || return 1
  [ "$(kubectl get storageprofile "$c_rwo" -o jsonpath='{.status.claimPropertySets[0].accessModes[0]}')" = ReadWriteOnce ]
}
ok_here "StorageProfiles: $c_rwo offers no RWX Filesystem, $c_kv does" profiles
# Leftovers of an earlier run must not decide for this one.
kubectl delete virtualmachineclusterpreference $P --ignore-not-found >/dev/null 2>&1
at_exit "kubectl delete virtualmachineclusterpreference $P $shared --ignore-not-found --wait=false >/dev/null 2>&1"
if ! kubectl get namespace "$HCO_NS" >/dev/null 2>&1; then
  kubectl create namespace "$HCO_NS" >/dev/null && at_exit "kubectl delete namespace $HCO_NS --wait=false >/dev/null 2>&1"
fi
kubectl -n "$HCO_NS" delete hyperconverged kubevirt-hyperconverged --ignore-not-found >/dev/null 2>&1
at_exit "kubectl -n $HCO_NS delete hyperconverged kubevirt-hyperconverged --ignore-not-found --wait=false >/dev/null 2>&1"
provisioner_start

audit_start=$(( $(stat -c %s "$AUDIT_LOG" 2>/dev/null || echo 0) + 1 ))
ok_here "agent without state.storageClass starts" agent_start agent "$(agent_config agent)"

# ---- 4. HyperConverged, then the KubeVirt CR ----
ok "HyperConverged kubevirt-hyperconverged in $HCO_NS" kubectl apply -f - <<YAML
apiVersion: hco.kubevirt.io/v1beta1
kind: HyperConverged
metadata: {name: kubevirt-hyperconverged, namespace: $HCO_NS}
spec: {}
YAML
ok "kubectl patch --type json adds spec.vmStateStorageClass" kubectl -n "$HCO_NS" patch hyperconverged \
  kubevirt-hyperconverged --type json -p "[{\"op\":\"add\",\"path\":\"/spec/vmStateStorageClass\",\"value\":\"$c_hco\"}]"
k apply -f - >/dev/null <<<"$(vm_yaml vm-hco "{persistent: true}")"
wait_pvc vm-hco "vm-hco: state PVC created"
is "$(pvc_class vm-hco)/$(ts_field vm-hco '{.status.storageClassSource}')" "$c_hco/HyperConverged" \
  "vm-hco: PVC in the HyperConverged class, storageClassSource HyperConverged"

ok_here "KubeVirt CR naming $c_kv" kubevirt_cr_set "$c_kv"
k apply -f - >/dev/null <<<"$(vm_yaml vm-kv "{persistent: true}")"
wait_pvc vm-kv "vm-kv: state PVC created"
is "$(pvc_class vm-kv)/$(ts_field vm-kv '{.status.storageClassSource}')" "$c_kv/KubeVirt" \
  "vm-kv: the KubeVirt CR wins over HyperConverged"
is "$(event_count vm-kv StorageClassNotRWX)" 0 "vm-kv: no StorageClassNotRWX (its StorageProfile offers RWX Filesystem)"

# ---- 1 and 5: namespaced preference; a missing cluster preference ----
ok "namespaced VirtualMachinePreference $P" k apply -f - <<<"$(win11_yaml VirtualMachinePreference $P)"
pvm vm-nspref "{kind: VirtualMachinePreference, name: $P}"
pvm vm-early "{name: $P}" # the cluster one does not exist yet
wait_pvc vm-nspref "vm-nspref (namespaced $P, no tpm of its own): state PVC created"
if wait_until 30 count_is vm-early PreferenceNotFound 1; then pass "vm-early: one Warning PreferenceNotFound"; else
  fail "vm-early: one Warning PreferenceNotFound" "events: $(events_for vm-early)"; fi
is "$(events_for vm-early PreferenceNotFound | awk '{print $1}')" Warning "vm-early: the event is a Warning"
is "$(ts_phase vm-early)/$(ready_reason vm-early)" Error/PreferenceNotFound "vm-early: TPMState Error, reason PreferenceNotFound"
like "$(ts_field vm-early '{.status.message}')" "VirtualMachineClusterPreference \"$P\".*does not exist" \
  "vm-early: the status message names the missing preference"
is "$(has_pvc vm-early && echo yes || echo no)" no "vm-early: no PVC while the preference is missing"
ok "the agent keeps running" kill -0 "$(agent_pid agent)"

ok "cluster VirtualMachineClusterPreference $P" kubectl apply -f - <<<"$(win11_yaml VirtualMachineClusterPreference $P)"
t0=$(date +%s)
wait_pvc vm-early "vm-early: PVC exists once the preference does" 10
diag "vm-early's PVC appeared $(( $(date +%s) - t0 )) s after the preference"
pvm vm-cpref "{name: $P}"
wait_pvc vm-cpref "vm-cpref (cluster $P, no tpm of its own): state PVC created"
# Pending or Ready: binding is the provisioner's pace (busy with leftovers in CI).
like "$(ts_phase vm-cpref)/$(ts_field vm-cpref '{.status.persistent}')" '^(Pending|Ready)/true$' \
  "vm-cpref: TPMState persistent (Pending or Ready)"

# ---- 2. the VM's own tpm wins over the preference ----
pvm vm-np "{name: $P}" "{persistent: false}"
pvm vm-off "{name: $P}" "{enabled: false}"
pvm vm-canary "{name: $P}"
wait_pvc vm-canary "canary VM served (the agent got past vm-np and vm-off)"
if wait_until 30 count_is vm-np NonPersistentTPM 1; then pass "vm-np: one NonPersistentTPM Warning"; else
  fail "vm-np: one NonPersistentTPM Warning" "events: $(events_for vm-np)"; fi
sleep 3 # proving that nothing happens
is "$(has_pvc vm-np && echo yes || echo no)" no "vm-np (tpm persistent: false): no PVC"
is "$(ts_phase vm-np)" Ephemeral "vm-np: TPMState Ephemeral"
is "$(has_pvc vm-off && echo yes || echo no)" no "vm-off (tpm enabled: false): no PVC"
is "$(events_for vm-off)" "" "vm-off: no event at all"

# ---- 3. frozen revision ----
ok "ControllerRevision holding $P (persistent)" k apply -f - <<YAML
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: vm-frozen-$P-1, namespace: $NS}
data: {"apiVersion":"instancetype.kubevirt.io/v1beta1","kind":"VirtualMachineClusterPreference","metadata":{"name":"$P"},"spec":{"devices":{"preferredTPM":{"persistent":true}}}}
revision: 1
YAML
pvm vm-frozen "{name: $P}"
ok "vm-frozen bound by status.preferenceRef.controllerRevisionRef" k patch vm vm-frozen --subresource=status --type merge \
  -p "{\"status\":{\"preferenceRef\":{\"name\":\"$P\",\"kind\":\"VirtualMachineClusterPreference\",\"controllerRevisionRef\":{\"name\":\"vm-frozen-$P-1\"}}}}"
pvm vm-frozen-old "{name: $P, revisionName: vm-frozen-$P-1}"
pvm vm-live "{name: $P}"
wait_pvc vm-frozen "vm-frozen: state PVC created"
wait_pvc vm-frozen-old "vm-frozen-old (spec.preference.revisionName): state PVC created"
wait_pvc vm-live "vm-live (unbound): state PVC created"

# Real KubeVirt's virt-controller freezes each VM itself, storing a revision
# of its own (named in status.preferenceRef; spec.preference.revisionName it
# replaces), sometimes only on a retry (a FailedCreate event first): let it
# finish before the edit, or it would freeze the edited preference.
# The revision virt-controller named in VM's status (empty: none yet).
revision_of() { k get vm "$1" -o jsonpath='{.status.preferenceRef.controllerRevisionRef.name}'; }
bound() { [ -n "$(revision_of "$1")" ]; }
all_stored() {
  local vm r
  for vm in vm-frozen vm-live; do   # (vm-frozen-old: below)
    r=$(revision_of "$vm") && [ -n "$r" ] && k get controllerrevision "$r" >/dev/null 2>&1 || return 1
  done
}
if kubevirt_cr_is_real && ! wait_until 60 all_stored; then
  diag "virt-controller has not stored every VM's revision: $(k get vm -o json | jq -c '[.items[] | {(.metadata.name): .status.preferenceRef.controllerRevisionRef.name}]')"
fi
ok "the live $P drops persistent (preferredTPM: {})" kubectl patch virtualmachineclusterpreference $P \
  --type json -p '[{"op":"replace","path":"/spec/devices/preferredTPM","value":{}}]'
# Real KubeVirt's virt-controller binds every VM to a ControllerRevision of
# its preference as soon as it sees it (status.preferenceRef): vm-live is then
# frozen too, and stays persistent. Unbound (the stand-ins), it follows the edit.
if kubevirt_cr_is_real && wait_until 30 bound vm-live; then
  sleep 5 # proving that nothing happens
  like "$(ts_phase vm-live)/$(ts_field vm-live '{.status.persistent}')" '^(Pending|Ready)/true$' \
    "vm-live, bound by virt-controller to a revision, stays persistent after the edit"
elif wait_until 30 phase_is vm-live Retained; then pass "vm-live follows the edit: TPMState Retained"; else
  fail "vm-live follows the edit: TPMState Retained" "$(k get tpmstate vm-live -o jsonpath='{.status}')"; fi
is "$(has_pvc vm-live && echo yes || echo no)" yes "vm-live: its PVC stays"
# Make the agent judge the bound VMs again now: a spec change bumps generation.
frozen_check() {
  local vm=$1
  k patch vm "$vm" --type merge -p '{"spec":{"runStrategy":"Manual"}}' >/dev/null
  if wait_until 30 observed_current "$vm"; then
    like "$(ts_phase "$vm")/$(ts_field "$vm" '{.status.persistent}')/$(event_count "$vm" NonPersistentTPM)" \
      '^(Pending|Ready)/true/0$' "$vm: still persistent after the edit (frozen revision), no NonPersistentTPM"
  else
    fail "$vm: still persistent after the edit (frozen revision)" "TPMState not reconciled for generation $(gen "$vm")"
  fi
}
frozen_check vm-frozen
# KubeVirt v1.9 does not take over a revision named by the older
# spec.preference.revisionName: its virt-controller fails to store one of its
# own for that VM (FailedCreate, on every retry) and leaves its status without
# a preferenceRef, while the named revision is not found; the agent then has
# only the live preference. Checked where the VM is frozen by either field.
if kubevirt_cr_is_real && ! bound vm-frozen-old &&
   ! k get controllerrevision "vm-frozen-$P-1" >/dev/null 2>&1; then
  skip "vm-frozen-old: KubeVirt did not keep it frozen (no status.preferenceRef, revision vm-frozen-$P-1 gone)"
else
  frozen_check vm-frozen-old
fi

# ---- CDI StorageProfile without RWX Filesystem ----
ok_here "KubeVirt CR now names $c_rwo" kubevirt_cr_set "$c_rwo"
k apply -f - >/dev/null <<<"$(vm_yaml vm-rwo "{persistent: true}")"
if wait_until 30 count_is vm-rwo StorageClassNotRWX 1; then pass "vm-rwo: Warning StorageClassNotRWX"; else
  fail "vm-rwo: Warning StorageClassNotRWX" "events: $(events_for vm-rwo)"; fi
is "$(pvc_class vm-rwo)" "$c_rwo" "vm-rwo: PVC provisioned anyway, in $c_rwo (no other class picked)"
ok_here "KubeVirt CR back to $c_kv" kubevirt_cr_set "$c_kv"

# ---- 6. 300 VMs sharing one preference ----
# (1,000 before real KubeVirt: each VM now also passes virt-api's webhooks and
# virt-controller, and one request per VM would show as well at 300.)
many=300
# vtpm-agent requests on cluster preferences since this agent started, by verb.
pref_requests() {
  tail -c "+$audit_start" "$AUDIT_LOG" | grep -F '"virtualmachineclusterpreferences"' |
    jq -r 'select((.userAgent // "") | startswith("vtpm-agent/"))
      | select(.objectRef.resource == "virtualmachineclusterpreferences") | "\(.auditID) \(.verb)"' |
    sort -u | awk '{print $2}' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'
}
pref_total() { pref_requests | tr ' ' '\n' | awk -F= '{n += $2} END {print n + 0}'; }
ok "shared cluster preference $shared (persistent)" kubectl apply -f - <<<"$(win11_yaml VirtualMachineClusterPreference "$shared")"
before=$(pref_requests)
manifest="$AGENT_DIR/vms.yaml"
{
  echo '{"apiVersion": "v1", "kind": "List", "items": ['
  for i in $(seq -w 0 $(( many - 1 ))); do
    [ "$i" = 000 ] || echo ","
    echo "{\"apiVersion\":\"kubevirt.io/v1\",\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":\"many-$i\",\"namespace\":\"$NS\"},\"spec\":{\"runStrategy\":\"Halted\",\"preference\":{\"name\":\"$shared\"},\"template\":{\"spec\":{\"domain\":{\"cpu\":{\"sockets\":2},\"memory\":{\"guest\":\"4Gi\"},\"devices\":{}}}}}}"
  done
  echo ']}'
} > "$manifest"
t0=$(date +%s)
ok "create $many VMs naming $shared (one kubectl create of a List)" kubectl create -f "$manifest"
many_pvcs() { k get pvc -l vtpm-agent.io/vm -o name | grep -c '/persistent-state-for-many-'; }
many_are() { [ "$(many_pvcs)" -eq "$many" ]; }
if wait_until 150 many_are; then pass "$many state PVCs ($(( $(date +%s) - t0 )) s)"; else
  fail "$many state PVCs" "got $(many_pvcs)"; fi
after=$(pref_requests)
diag "agent requests on virtualmachineclusterpreferences: before the $many VMs: ${before:-none}; after: ${after:-none}"
is "$after" "$before" "no request on cluster preferences for $many VMs (${after:-none})"
total=$(pref_total)
if [ "$total" -ge 2 ] && [ "$total" -le 4 ] && [[ ! $after =~ get= ]]; then
  pass "the agent's preference requests are the informer's LIST + WATCH only ($total: $after)"
else
  fail "the agent's preference requests are the informer's LIST + WATCH only" "got $total: $after"
fi

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
