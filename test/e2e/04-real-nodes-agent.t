#!/usr/bin/env bash
# The agent on real nodes (issue 11, acceptance 2-4): the DaemonSet from
# manifests/ (deploy/overlays/testbed changes only the image name and pull
# policy) runs one pod per node under the real kubelets, authenticated by its
# pod's own service-account token, and the least-privilege can-i table holds
# for that token. A launcher pod (the test bed's launcher image: a listener and
# swtpm) gets its vTPM from the agent on its node; a secret sealed with clevis
# on node-1 unseals after the VM's launcher is recreated on node-2. Killing the
# agent's container (the kubelet restarts it) and rolling the DaemonSet to
# another image both leave the running swtpm untouched: same process, and the
# guest keeps using its TPM. Runs only with real nodes and their images
# (VTPM_NODES>=2 and VTPM_NODES_AGENT_IMAGE=1, as make test brings them up).
. "$(dirname "$0")/lib.sh"
[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
rn_images_ready || skip_all "the nodes have no agent or launcher image (VTPM_NODES_AGENT_IMAGE=1)"
plan 46
setup_namespace e2e-real-agent
. "$E2E_TOP/test/e2e/lib-agent.sh"  # vm_yaml, events_for

T=$(mktemp -d /tmp/vtpm-e2e-real.XXXXXX)
chmod 755 "$T"
n1=$(nl_name 1) n2=$(nl_name 2)
class=$NS-local
at_exit "rn_guest_stop; kubectl -n $NS delete pods -l kubevirt.io=virt-launcher --wait=true --timeout=60s >/dev/null 2>&1;
  rn_agent_undeploy; rn_storage_down; kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1;
  kubectl get pv -o json | jq -r '.items[] | select((.spec.local.path // \"\") | startswith(\"$T/\")) | .metadata.name' |
    xargs -r kubectl delete pv --wait=false >/dev/null 2>&1; rm -rf '$T'"

# ---- 2. The DaemonSet, one pod per node, its own token -------------------------
ok "kubectl apply -k deploy/overlays/testbed: an agent pod Ready on every node" rn_agent_deploy
p1=$(rn_agent_pod "$n1") p2=$(rn_agent_pod "$n2")
[ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" != "$p2" ] && pass "one agent pod per node ($p1 on $n1, $p2 on $n2)" ||
  fail "one agent pod per node" "$(kubectl -n vtpm-system get pods -o wide)"
is "$(kubectl -n vtpm-system get pod "$p1" -o jsonpath='{.spec.containers[0].image} {.spec.serviceAccountName} {.spec.hostPID} {.spec.hostNetwork}')" \
  "localhost/vtpm-agent:testbed vtpm-agent true true" "the pod runs the image built here, as the vtpm-agent ServiceAccount, hostPID and the node's network"
log1=$(rn_agent_log "$n1")
like "$(grep -m1 'connected to the API server' "$log1")" '"user":"system:serviceaccount:vtpm-system:vtpm-agent","config":"in-cluster service account"' \
  "the agent found the API server and authenticated from its pod's in-cluster token"
like "$(grep -m1 'node controller running' "$log1")" "\"node\":\"$n1\"" "its node controller runs for $n1 (NODE_NAME from the downward API)"

# The token the kubelet projected into the agent's container, read from there
# (/run, not /var/run: that is an absolute symlink, resolved against our own
# root). Until it names the pod: right after a redeploy, the first look may
# still find the old container.
_agent_token_kubeconfig() {
  local apid
  apid=$(rn_container_pid vtpm-system "$p1") || return 1
  printf '%s\n' "apiVersion: v1" "kind: Config" \
    "clusters: [{name: tb, cluster: {server: \"https://127.0.0.1:$TB_APISERVER_PORT\", certificate-authority: \"$TB_PKI/ca.crt\"}}]" \
    "users: [{name: agent, user: {tokenFile: \"/proc/$apid/root/run/secrets/kubernetes.io/serviceaccount/token\"}}]" \
    "contexts: [{name: agent, context: {cluster: tb, user: agent}}]" "current-context: agent" > "$T/agent.kubeconfig"
  who=$(KUBECONFIG=$T/agent.kubeconfig kubectl auth whoami -o json 2>&1)
  [ "$(jq -r '.status.userInfo.username + " " + (.status.userInfo.extra["authentication.kubernetes.io/pod-name"][0] // "")' <<<"$who" 2>/dev/null)" = \
    "system:serviceaccount:vtpm-system:vtpm-agent $p1" ]
}
if wait_until 30 _agent_token_kubeconfig; then
  pass "the projected token is the ServiceAccount's, bound to the agent's pod"
else fail "the projected token is the ServiceAccount's, bound to the agent's pod" "$who"; fi
# What the node-scope admission policies (manifests/node-scope.yaml) key on:
# the API server reads the pod's node from the token the kubelet projected.
is "$(jq -r '.status.userInfo.extra["authentication.kubernetes.io/node-name"][0] // "none"' <<<"$who" 2>&1)" "$n1" \
  "the projected token names the agent's node ($n1): authentication.kubernetes.io/node-name"
tenant=$NS
fails=0 rows=0
while read -r want verb res rest; do
  [ -n "$want" ] && [[ $want != \#* ]] || continue
  rest=${rest//TENANT/$tenant}
  # shellcheck disable=SC2086
  got=$(KUBECONFIG=$T/agent.kubeconfig kubectl auth can-i "$verb" "$res" $rest 2>/dev/null)
  rows=$((rows + 1))
  [ "$got" = "$want" ] || { fails=$((fails + 1)); diag "can-i $verb $res $rest: want $want, got $got"; }
done < "$E2E_TOP/test/e2e/agent-can-i.txt"
is "$fails" 0 "the least-privilege can-i table holds for the pod's own token ($rows rows)"

# ---- 3. The clevis story on real nodes ------------------------------------------
# Not under `ok` (a subshell): the provisioner's pid must reach rn_storage_down.
if rn_storage_up "$T/store" "$class"; then pass "storage: test-bed provisioner of local RWX volumes, class $class"
else fail "storage: test-bed provisioner of local RWX volumes, class $class"; fi
vm=win11
vm_yaml "$vm" '{persistent: true}' | k apply -f - >/dev/null
_phase_ready() {
  [ "$(k get tpmstate "$vm" -o jsonpath='{.status.phase}' 2>/dev/null)" = Ready ] &&
    [ "$(k get pvc "persistent-state-for-$vm" -o jsonpath='{.status.phase}' 2>/dev/null)" = Bound ]
}
ok "the DaemonSet's state controller provisions the VM's state (TPMState Ready, PVC Bound)" wait_until 90 _phase_ready
vm_uid=$(k get vm "$vm" -o jsonpath='{.metadata.uid}')
pvc=$(k get tpmstate "$vm" -o jsonpath='{.status.pvcName}')
is "$(kubectl get pv "$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.local.path}' | grep -c "^$T/store/")" 1 \
  "its PVC $pvc is bound to a local RWX volume on the shared store"

_running_on() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" = "$1 Running" ]; }
ok "a launcher pod for $vm on $n1" rn_launcher_start "$NS" launcher-a "$vm" "$n1"
if wait_until 90 _running_on "$n1"; then pass "the agent on $n1 started the vTPM: TPMState says Running on $n1"
else fail "the agent on $n1 started the vTPM" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')" "$(tail -5 "$(rn_agent_log "$n1")")"; fi
s1=$(rn_swtpm_pid "$vm_uid")
lpid=$(rn_container_pid "$NS" launcher-a)
# swtpm runs in its sandbox: a mount namespace of its own, neither the
# launcher's (whose files are the tenant's) nor the agent container's.
apid=$(rn_container_pid vtpm-system "$p1")
smnt=$(readlink "/proc/$s1/ns/mnt" 2>/dev/null)
if [ -n "$s1" ] && [ -n "$lpid" ] && [ -n "$apid" ] && [ -n "$smnt" ] &&
   [ "$smnt" != "$(readlink "/proc/$lpid/ns/mnt")" ] && [ "$smnt" != "$(readlink "/proc/$apid/ns/mnt")" ]; then
  pass "swtpm ($s1) runs in a mount namespace of its own, neither the launcher's nor the agent's"
else fail "swtpm runs in a mount namespace of its own, neither the launcher's nor the agent's" \
  "swtpm '$s1' $smnt, launcher '$lpid' $(readlink "/proc/$lpid/ns/mnt" 2>/dev/null), agent '$apid' $(readlink "/proc/$apid/ns/mnt" 2>/dev/null)"; fi
like "$(grep -m1 memory /proc/$s1/cgroup)" "/k8s.io/$(k get pod launcher-a -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|containerd://||')" \
  "swtpm is in the launcher container's cgroup"
attach=$(k get pods -l "vtpm-agent.io/attachment-for=$(k get pod launcher-a -o jsonpath='{.metadata.uid}')" -o jsonpath='{.items[0].metadata.name} {.items[0].spec.nodeName} {.items[0].status.phase}')
like "$attach" "^vtpm-attach-[^ ]+ $n1 Running\$" "an attachment pod on $n1 runs; the real kubelet published the state volume for it"
like "$(awk '$5 ~ "^/var/lib/libvirt/swtpm/'"$vm_uid"'$" { print $4 " " $5 }' "/proc/$lpid/mountinfo")" "^/[^ ]*testbed-[^ ]* /var/lib/libvirt/swtpm/$vm_uid\$" \
  "the state volume is mounted in the launcher where swtpm keeps its state"

# Not under `ok` (a subshell): the bridge's pid and $RN_TCTI must reach us.
if rn_guest_start "$(rn_swtpm_ctrl "$NS" launcher-a "$vm")" "$T/guest.sock" "$T/guest-a.log"; then pass "guest on $n1: QEMU's side of the external TPM backend"
else fail "guest on $n1: QEMU's side of the external TPM backend"; fi
rn_guest tpm2_startup -c >/dev/null 2>&1
secret="BitLocker recovery key $RANDOM-$RANDOM"
if printf '%s' "$secret" | rn_guest clevis encrypt tpm2 '{}' > "$T/secret.jwe" 2> "$T/clevis.err" && [ -s "$T/secret.jwe" ]; then
  pass "clevis sealed a secret through the vTPM of the launcher pod on $n1"
else fail "clevis sealed a secret through the vTPM of the launcher pod on $n1" "$(cat "$T/clevis.err")"; fi
rn_guest_stop
store=$(kubectl get pv "$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.local.path}')
ok "the TPM state is on the shared volume, not in the launcher" test -s "$store/tpm2-00.permall"

ok "the VM stops: its launcher pod on $n1 is deleted" rn_launcher_stop "$NS" launcher-a
_swtpm_gone() { [ -z "$(rn_swtpm_pid "$vm_uid")" ]; }
ok "swtpm stopped with its launcher" wait_until 30 _swtpm_gone
_no_attach() { [ -z "$(k get pods -l vtpm-agent.io/attachment-for -o name)" ]; }
ok "the attachment pod went with it" wait_until 60 _no_attach

ok "the VM starts again: a launcher pod on $n2" rn_launcher_start "$NS" launcher-b "$vm" "$n2"
if wait_until 90 _running_on "$n2"; then pass "the agent on $n2 started the vTPM from the same state"
else fail "the agent on $n2 started the vTPM from the same state" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')" "$(tail -5 "$(rn_agent_log "$n2")")"; fi
# Not under `ok` (a subshell): the bridge's pid and $RN_TCTI must reach us.
if rn_guest_start "$(rn_swtpm_ctrl "$NS" launcher-b "$vm")" "$T/guest.sock" "$T/guest-b.log"; then pass "guest on $n2"
else fail "guest on $n2"; fi
rn_guest tpm2_startup -c >/dev/null 2>&1
is "$(rn_guest clevis decrypt < "$T/secret.jwe" 2>&1)" "$secret" "clevis decrypt on $n2 returns the secret sealed on $n1"

# ---- 4. The agent's container killed; the DaemonSet rolled ----------------------
s2=$(rn_swtpm_pid "$vm_uid")
s2_start=$(awk '{print $22}' "/proc/$s2/stat" 2>/dev/null)
[ -n "$s2" ] && [ -n "$s2_start" ] || diag "no swtpm for $vm on $n2: the checks below must fail"
s2=${s2:-none} s2_start=${s2_start:-none}
p2=$(rn_agent_pod "$n2")
a2=$(rn_container_pid vtpm-system "$p2")
log_before=$(rn_agent_log "$n2")
kill -KILL "$a2"
_restarted() {
  [ "$(kubectl -n vtpm-system get pod "$p2" -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}')" = "1 true" ]
}
ok "the agent's container on $n2 killed (SIGKILL): the kubelet restarts it" wait_until 120 _restarted
is "$(rn_swtpm_pid "$vm_uid") $(awk '{print $22}' "/proc/$s2/stat" 2>/dev/null)" "$s2 $s2_start" "the running swtpm is the same process (pid and start time)"
log_after=$(rn_agent_log "$n2")
_adopted() { grep -q 'adopted a running swtpm' "$(rn_agent_log "$n2")"; }
if [ "$log_after" != "$log_before" ] && wait_until 30 _adopted; then pass "the restarted agent adopted it (its log says so)"
else fail "the restarted agent adopted it" "$(tail -5 "$log_after")"; fi
like "$(rn_guest tpm2_getrandom --hex 8 2>&1)" '^[0-9a-f]{16}$' "the guest keeps using its TPM"

kubectl -n vtpm-system set image ds/vtpm-agent agent=localhost/vtpm-agent:testbed-next >/dev/null
ok "the DaemonSet rolls to another image (localhost/vtpm-agent:testbed-next)" \
  kubectl -n vtpm-system rollout status ds/vtpm-agent --timeout=180s
np2=$(rn_agent_pod "$n2")
is "$(kubectl -n vtpm-system get pod "$np2" -o jsonpath='{.spec.containers[0].image}') $([ "$np2" != "$p2" ] && echo new-pod)" \
  "localhost/vtpm-agent:testbed-next new-pod" "$n2's agent is a new pod on the new image" ||
  diag "agent pod on $n2: '$np2'; pods:" "$(kubectl -n vtpm-system get pods -o wide 2>&1)"
like "$(kubectl -n vtpm-system get pod "$np2" -o jsonpath='{.status.containerStatuses[0].imageID}')" '^sha256:' "the kubelet reports the new image's id"
is "$(rn_swtpm_pid "$vm_uid") $(awk '{print $22}' "/proc/$s2/stat" 2>/dev/null)" "$s2 $s2_start" "after the roll, still the same swtpm process"
_adopted_new() { grep -q 'adopted a running swtpm' "$(rn_agent_log "$n2")"; }
ok "the new agent adopted it" wait_until 30 _adopted_new
like "$(rn_guest tpm2_getrandom --hex 8 2>&1)" '^[0-9a-f]{16}$' "the guest keeps using its TPM after the roll"
is "$(rn_guest clevis decrypt < "$T/secret.jwe" 2>&1)" "$secret" "and still unseals its secret"
is "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" "$n2 Running" "TPMState still says Running on $n2"
is "$(events_for "$vm" | awk '$1 == "Warning"' | sort -u | tr '\n' ';')" "" "no Warning event about the VM through all of it"

# ---- the end: nothing outlives the launcher --------------------------------------
rn_guest_stop
ok "the VM stops on $n2" rn_launcher_stop "$NS" launcher-b
ok "swtpm stopped with its launcher" wait_until 30 _swtpm_gone
ok "no attachment pod is left" wait_until 60 _no_attach
ok "the state stays on its volume" test -s "$store/tpm2-00.permall"
ok "the DaemonSet is removed; its pods go" rn_agent_undeploy
rn_storage_down
is "$(pgrep -f "testbed-provisioner .*--root $T/store" 2>/dev/null)" "" "the suite's provisioner is gone (it would race the next suites' own)"
