#!/usr/bin/env bash
# KubeVirt's own persistent vTPM, with no vtpm-agent installed: the anchor every
# later claim is measured against (issue 20, acceptance 2 and 3). The TPM guest
# (hack/build-tpm-guest.sh, kernel boot) runs in a VM with `tpm: {persistent:
# true}` on node-1 and seals a secret with clevis; `virtctl stop`, the VM pinned
# to node-2, `virtctl start`: the guest unseals it (the JWE goes back on the
# kernel command line, as a disk would keep it). Recorded: the state PVC
# KubeVirt made (name, labels, access mode, where the launcher mounts it) and
# that its state files are plaintext (a bare swtpm without a key loads them).
# Then `virtctl migrate` of that VM, and of a VM without a TPM (the migration
# path itself): both results are recorded as they are.
# Skipped unless the test bed runs KubeVirt (the default; not VTPM_KUBEVIRT=0).
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_kubevirt
command -v swtpm >/dev/null || skip_all "needs swtpm on the machine (hack/install-deps.sh)"
plan 20
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)
T=$(mktemp -d "$VTPM_RUN/e2e-06.XXXXXX")
at_exit "rm -rf '$T'"

# Storage: the test bed's RWX provisioner; KubeVirt's state class is the CR's
# vmStateStorageClass (put back as it was at the end).
class=$NS-rwx
rn_kubevirt_state_storage "$T/store" "$class"

vm_apply() { rn_guest_vm "$NS" "$1" "$2" "$3" "$([ "${4:-true}" = true ] && echo persistent || echo none)"; }
vmi_on() { rn_vmi_on "$NS" "$@"; }
launcher() { rn_vm_launcher "$NS" "$1"; }
console() { rn_vm_console "$NS" "$1"; }
said() { rn_vm_said "$NS" "$@"; }
vmi_gone() { rn_vmi_gone "$NS" "$1"; }

# ---- boot 1 on node-1: seal ----
secret=s3cret-$RANDOM$RANDOM
vm_apply tpm-guest "$n1" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.stay=1"
t0=$(date +%s)
virtctl start tpm-guest >/dev/null
ok "the VM with a persistent TPM runs on $n1 (VMI Running)" wait_until 240 vmi_on tpm-guest "$n1"
ok "the guest sealed a secret with clevis" wait_until 120 said tpm-guest 'sealed '
diag "boot 1: start to sealed in $(( $(date +%s) - t0 )) s"
like "$(console tpm-guest | grep '^TPM-GUEST: tpm2 ')" 'tpm2 present family=2\.0 .*driver=tpm_crb' \
  "the guest sees a TPM 2.0 (tpm_crb, KubeVirt's model for a persistent TPM)"
jwe=$(console tpm-guest | sed -n 's/^TPM-GUEST: sealed //p' | head -1)

# ---- what KubeVirt made ----
pvc=$(k get pvc -l persistent-state-for=tpm-guest -o jsonpath='{.items[*].metadata.name}')
like "$pvc" '^persistent-state-for-tpm-guest-[a-z0-9]{5}$' \
  "KubeVirt made one state PVC, persistent-state-for-<vm>-<random>, label persistent-state-for=<vm>"
is "$(k get pvc "$pvc" -o jsonpath='{.spec.accessModes[*]} {.spec.volumeMode} {.spec.storageClassName} {.spec.resources.requests.storage}')" \
  "ReadWriteMany Filesystem $class 10Mi" "the state PVC: RWX, Filesystem, the CR's vmStateStorageClass, 10Mi"
diag "state PVC $pvc labels: $(k get pvc "$pvc" -o jsonpath='{.metadata.labels}') owner: $(k get pvc "$pvc" -o jsonpath='{.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}')"
mounts=$(k get "$(launcher tpm-guest)" -o jsonpath='{range .spec.containers[?(@.name=="compute")].volumeMounts[?(@.name=="vm-state")]}{.subPath}:{.mountPath} {end}')
diag "the launcher's compute container mounts vm-state: $mounts"
like "$mounts" 'swtpm:/var/run/kubevirt-private/libvirt/qemu/swtpm( |$)' \
  "the launcher mounts the state PVC's swtpm/ where libvirt keeps swtpm's state"
permall=$(find "$T/store" -path '*/swtpm/*/tpm2/tpm2-00.permall' | head -1)
ok "the state file is on the volume (swtpm/<vm uid>/tpm2/tpm2-00.permall)" test -s "$permall"
diag "state files: $(cd "$T/store" && find . -type f | sort | tr '\n' ' ')"
# A bare swtpm loads a copy of it without any key: the state is plaintext at rest.
ok "the state is plaintext: a bare swtpm with no key loads it (swtpm_ioctl -i)" rn_state_loads "$permall"

# ---- stop; boot 2 on node-2: unseal ----
virtctl stop tpm-guest >/dev/null
ok "virtctl stop: the VMI is gone" wait_until 120 vmi_gone tpm-guest
vm_apply tpm-guest "$n2" "console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.stay=1"
virtctl start tpm-guest >/dev/null
ok "started again, pinned to $n2 (VMI Running there)" wait_until 240 vmi_on tpm-guest "$n2"
ok "the guest printed an unseal result" wait_until 120 sh -c "kubectl -n $NS logs \$(kubectl -n $NS get pod -l kubevirt.io=virt-launcher,vm.kubevirt.io/name=tpm-guest --field-selector status.phase=Running -o name | head -1) -c guest-console-log 2>/dev/null | grep -q 'TPM-GUEST: unseal'"
is "$(console tpm-guest | sed -n 's/^TPM-GUEST: unsealed //p')" "$secret" \
  "on $n2 the guest unseals the secret sealed on $n1: KubeVirt's state PVC carried the TPM"
is "$(k get pvc -l persistent-state-for=tpm-guest -o jsonpath='{.items[*].metadata.name}')" "$pvc" \
  "the same state PVC, no second one"

# ---- live migration ----
# With the TPM: swtpm 0.7.1 (Debian 12 and 13) has no --migration; record what
# happens. Unpinned first (a pinned VM has nowhere to go: its target pod would
# stay unschedulable until KubeVirt gives up after 5 minutes).
virtctl stop tpm-guest >/dev/null
wait_until 120 vmi_gone tpm-guest
k patch vm tpm-guest --type json -p '[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]' >/dev/null
virtctl start tpm-guest >/dev/null
ok "the TPM VM runs again, not pinned" wait_until 240 sh -c "[ \"\$(kubectl -n $NS get vmi tpm-guest -o jsonpath='{.status.phase}')\" = Running ]"
tpm_from=$(k get vmi tpm-guest -o jsonpath='{.status.nodeName}')
virtctl migrate tpm-guest >/dev/null 2>&1
mig_done() { local p; p=$(k get vmim -l kubevirt.io/vmi-name="$1" -o jsonpath='{.items[-1:].status.phase}'); [ "$p" = Succeeded ] || [ "$p" = Failed ]; }
ok "virtctl migrate of the TPM VM ends (Succeeded or Failed)" wait_until 400 mig_done tpm-guest
tpm_mig=$(k get vmim -l kubevirt.io/vmi-name=tpm-guest -o jsonpath='{.items[-1:].status.phase}')
diag "TPM VM migration: $tpm_mig; VMI on $tpm_from before, $(k get vmi tpm-guest -o jsonpath='{.status.nodeName}') after; failureReason: $(k get vmi tpm-guest -o jsonpath='{.status.migrationState.failureReason}' | head -c 600)"
diag "migration phases: $(k get vmim -l kubevirt.io/vmi-name=tpm-guest -o jsonpath='{.items[-1:].status.phaseTransitionTimestamps[*].phase}')"
# The target's side, while its launcher pod is still there.
for p in $(k get pod -l kubevirt.io=virt-launcher,vm.kubevirt.io/name=tpm-guest -o name); do
  [ "$p" = "$(launcher tpm-guest)" ] && continue
  diag "target $p ($(k get "$p" -o jsonpath='{.spec.nodeName} {.status.phase}')): $(k logs "$p" -c compute 2>/dev/null |
    grep -i -E '"level":"(error|warning)"|swtpm|tpm' | grep -v -i 'cgroups v1' | tail -6 | cut -c1-400)"
done
diag "events: $(k get events --field-selector involvedObject.name=tpm-guest -o jsonpath='{range .items[?(@.type=="Warning")]}{.reason}: {.message}{"\n"}{end}' | tail -3 | head -c 800)"
ok "the TPM VM still runs after the migration attempt" sh -c "[ \"\$(kubectl -n $NS get vmi tpm-guest -o jsonpath='{.status.phase}')\" = Running ]"
virtctl stop tpm-guest >/dev/null

# Without a TPM: the migration path itself.
vm_apply plain "$n1" "console=ttyS0 quiet tpmguest.stay=1" false
k patch vm plain --type json -p '[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]' >/dev/null
virtctl start plain >/dev/null
ok "a VM without a TPM runs" wait_until 240 sh -c "[ \"\$(kubectl -n $NS get vmi plain -o jsonpath='{.status.phase}')\" = Running ]"
from=$(k get vmi plain -o jsonpath='{.status.nodeName}')
virtctl migrate plain >/dev/null 2>&1
ok "virtctl migrate of the VM without a TPM ends" wait_until 300 mig_done plain
plain_mig=$(k get vmim -l kubevirt.io/vmi-name=plain -o jsonpath='{.items[-1:].status.phase}')
to=$(k get vmi plain -o jsonpath='{.status.nodeName}')
diag "plain VM migration: $plain_mig, $from -> $to; $(k get vmi plain -o jsonpath='{.status.migrationState.failureReason}' | head -c 400)"
is "$plain_mig $([ "$from" != "$to" ] && echo moved)" "Succeeded moved" \
  "the VM without a TPM live-migrates to the other node (the migration path works on the test bed)"
virtctl stop plain >/dev/null
ok "both VMs stopped" wait_until 120 sh -c "! kubectl -n $NS get vmi tpm-guest plain -o name 2>/dev/null | grep -q ."
