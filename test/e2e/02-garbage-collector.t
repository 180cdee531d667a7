#!/usr/bin/env bash
# Issue 2, acceptance 3: the real garbage collector (kube-controller-manager)
# deletes an object whose owner VM was deleted, and leaves alone one whose
# owner still exists.
. "$(dirname "$0")/lib.sh"

plan 9
setup_namespace

vm() { # NAME: a minimal VM
  k apply -f - <<YAML
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $1}
spec:
  runStrategy: Halted
  template: {spec: {domain: {devices: {}}}}
YAML
}

dependent() { # NAME OWNER-VM OWNER-UID: a ConfigMap the VM controls
  k apply -f - <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: $1
  ownerReferences:
  - apiVersion: kubevirt.io/v1
    kind: VirtualMachine
    name: $2
    uid: $3
    controller: true
    blockOwnerDeletion: true
data: {note: owned by $2}
YAML
}

# Gone means NotFound from the server, not "kubectl failed for some reason".
cm_gone() { local out; out=$(k get configmap "$1" 2>&1); [[ $out == *"(NotFound)"* ]]; }

ok "create VM doomed" vm doomed
ok "create VM kept" vm kept
doomed_uid=$(k get vm doomed -o jsonpath='{.metadata.uid}')
kept_uid=$(k get vm kept -o jsonpath='{.metadata.uid}')
ok "create ConfigMap state-doomed owned by VM doomed" dependent state-doomed doomed "$doomed_uid"
ok "create ConfigMap state-kept owned by VM kept" dependent state-kept kept "$kept_uid"

ok "delete VM doomed" k delete vm doomed --wait=true --timeout=60s

# The garbage collector notices a new CRD by rediscovery (about 20 s after it
# appeared), so allow 90 s.
t0=$(date +%s)
if wait_until 90 cm_gone state-doomed; then
  pass "garbage collector deleted the dependent of the deleted VM ($(( $(date +%s) - t0 )) s)"
else
  fail "garbage collector deleted the dependent of the deleted VM" "still there after 90 s:" \
    "$(k get configmap state-doomed -o yaml 2>&1)"
fi

# The dependent of the surviving VM: the collector has processed this
# namespace's owner graph by now (it just collected state-doomed), and it
# must not have touched state-kept.
ok "dependent of the existing VM still exists" k get configmap state-kept
is "$(k get configmap state-kept -o jsonpath='{.metadata.ownerReferences[0].uid}')" "$kept_uid" \
  "its ownerReference still names VM kept"
ok "VM kept still exists" k get vm kept
