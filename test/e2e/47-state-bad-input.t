#!/usr/bin/env bash
# Issue 4, acceptance 2 (bad input): the strict VM schema makes the API
# server refuse a string where a boolean belongs, with a clear message; what
# the schema lets through but the agent cannot use (an unknown TPM version
# or model annotation, TPM 1.2 with the CRB interface) gets InvalidTPMSpec in
# the status and a Warning event, and the agent moves on to other VMs.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-47
. "$(dirname "$0")/lib-agent.sh"

plan 22

cls=e2e47-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent "$(agent_config agent "$cls")"

# REGEX: the stand-in CRD's wording ("x: Invalid value") or the real one's ("x in body").
refused() { # NAME TPM-YAML REGEX
  local out rc=0
  out=$(k apply -f - 2>&1 <<<"$(vm_yaml "$1" "$2")") || rc=$?
  if [ $rc -ne 0 ] && [[ $out =~ $3 ]]; then pass "API server refuses tpm: $2 ($(grep -o 'spec[^,]*' <<<"$out" | head -1))"
  else fail "API server refuses tpm: $2" "exit $rc" "$out"; fi
}
refused vm-s1 '{persistent: "yes"}' 'spec\.template\.spec\.domain\.devices\.tpm\.persistent(: Invalid value: "string": .*| in body )must be of type boolean'
refused vm-s2 '{enabled: "true", persistent: true}' 'devices\.tpm\.enabled(: Invalid value: "string": .*| in body )must be of type boolean'
refused vm-s3 '"yes"' 'devices\.tpm(: Invalid value: "string": .*| in body )must be of type object'
ok "none of them exists" bash -c "! kubectl -n $NS get vm vm-s1 vm-s2 vm-s3 2>/dev/null | grep -q vm-"

phase_reason() { k get tpmstate "$1" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].reason}'; }
is_phase_reason() { [ "$(phase_reason "$1")" = "$2" ]; }
has_event() { [ "$(event_count "$1" "$2")" -ge 1 ]; }
{
  vm_yaml vm-v3 "{persistent: true}" '{vtpm-agent.io/tpm-version: "3.0"}'
  vm_yaml vm-model "{persistent: true}" '{vtpm-agent.io/tpm-model: "tpm-spapr"}'
  vm_yaml vm-crb12 "{persistent: true}" '{vtpm-agent.io/tpm-version: "1.2", vtpm-agent.io/tpm-model: "tpm-crb"}'
  vm_yaml vm-good "{persistent: true}"
  vm_yaml vm-tis12 "{persistent: true}" '{vtpm-agent.io/tpm-version: "1.2", vtpm-agent.io/tpm-model: "tpm-tis"}'
} > "$AGENT_DIR/vms.yaml"
ok "VMs with unusable TPM annotations (and good ones) are accepted by the API server" k apply -f "$AGENT_DIR/vms.yaml"

check_invalid() { # VM REGEX
  if wait_until 30 is_phase_reason "$1" Error/InvalidTPMSpec; then pass "$1: TPMState Error/InvalidTPMSpec"; else fail "$1: TPMState Error/InvalidTPMSpec" "got $(phase_reason "$1")"; fi
  like "$(k get tpmstate "$1" -o jsonpath='{.status.message}')" "$2" "$1: the status says what is wrong"
  wait_until 15 has_event "$1" InvalidTPMSpec
  like "$(kubectl -n "$NS" get events.events.k8s.io -o json | jq -r --arg vm "$1" '.items[] | select(.regarding.name == $vm) | "\(.type) \(.reason): \(.note)"')" \
    "^Warning InvalidTPMSpec: the VM's TPM settings cannot be used: $2" "$1: a Warning event with the same message"
}
check_invalid vm-v3 'annotation vtpm-agent.io/tpm-version is "3.0"; the supported TPM versions are "2.0" \(the default\) and "1.2"'
check_invalid vm-model 'annotation vtpm-agent.io/tpm-model is "tpm-spapr"; the supported TPM models are "tpm-crb" \(the default\) and "tpm-tis"'
check_invalid vm-crb12 'TPM version 1.2 needs model tpm-tis.*exists only for TPM 2.0'
is "$(k get pvc -o name | sort | tr '\n' ' ')" \
  "persistentvolumeclaim/persistent-state-for-vm-good persistentvolumeclaim/persistent-state-for-vm-tis12 " \
  "no PVC for the invalid VMs; the valid ones (incl. 1.2 + tpm-tis) got theirs"
ready() { [ "$(k get tpmstate "$1" -o jsonpath='{.status.phase}')" = Ready ]; }
if wait_until 60 ready vm-good && wait_until 30 ready vm-tis12; then pass "the agent moved on: vm-good and vm-tis12 Ready"; else fail "vm-good and vm-tis12 Ready"; fi

# Fixing the annotation heals the VM.
ok "fix vm-v3's annotation" k annotate vm vm-v3 --overwrite vtpm-agent.io/tpm-version=2.0
if wait_until 30 ready vm-v3; then pass "vm-v3: Ready once the annotation is fixed"; else fail "vm-v3: Ready once fixed" "got $(phase_reason vm-v3)"; fi

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
