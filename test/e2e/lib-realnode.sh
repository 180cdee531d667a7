# Helpers for the agent on real test-bed nodes (suite 04, make demo): the
# DaemonSet from manifests/ (deploy/overlays/testbed), launcher pods from the
# test bed's launcher image, and the "guest" that reaches a launcher's swtpm
# the way QEMU's external TPM backend would. No TAP here: functions return a
# status and print on stderr why they failed. Needs hack/testbed-lib.sh and
# hack/nodes-lib.sh sourced, the nodes up with VTPM_NODES_AGENT_IMAGE=1, and
# kubectl on PATH with an admin KUBECONFIG. Safe under set -e (make demo).
#
#   rn_images_ready          0 when the nodes have the agent and launcher images
#   rn_storage_up DIR CLASS  test-bed provisioner of `local` RWX volumes over DIR,
#                            StorageClass CLASS as KubeVirt's default virt class
#   rn_storage_down          stop that provisioner
#   rn_kubevirt_state_storage DIR CLASS  rn_storage_up and CLASS as the KubeVirt CR's
#                            vmStateStorageClass, all undone at exit (TAP suites only:
#                            it registers lib.sh's at_exit)
#   rn_agent_deploy          (re)deploy: kubectl apply -k deploy/overlays/testbed; wait until an
#                            agent pod is Ready on every node
#   rn_agent_undeploy        remove the DaemonSet and its namespace's agent objects, and
#                            KubeVirt's Plugin vtpm-agent (deploy/kubevirt-plugin) if there
#   rn_agent_pod NODE        the agent's pod on NODE
#   rn_container_pid NS POD  host pid of POD's first container (through its node's containerd)
#   rn_agent_log NODE        the agent container's current log file on NODE (the kubelet's)
#   rn_launcher_yaml POD VM NODE       a launcher pod's YAML (the launcher image, on NODE)
#   rn_launcher_start NS POD VM NODE   a launcher pod for VM on NODE; waits until it listens
#   rn_launcher_stop NS POD  delete it and wait until it is gone
#   rn_swtpm_ctrl NS POD VM  swtpm's control socket in that launcher, as the host reaches it
#   rn_swtpm_pid VM_UID [NAMES]   the swtpm serving VM (pid), if one runs
#   rn_guest_start CTRL SOCK LOG / rn_guest_stop   the bridge; then $RN_TCTI is the guest's TCTI
# The TPM guest on real KubeVirt (hack/build-tpm-guest.sh; needs nodes-lib's images.env sourced):
#   rn_guest_vm NS VM NODE ARGS [TPM]  its VirtualMachine (hack/images/tpm-guest/vm.yaml, runStrategy
#                            Manual) pinned to NODE with kernel arguments ARGS; TPM persistent
#                            (default), ephemeral (`tpm: {}`) or none
#   rn_vmi_on NS VM NODE     0 when the VMI is Running on NODE
#   rn_vmi_gone NS VM        0 when there is no VMI
#   rn_vm_launcher NS VM     its Running launcher pod (pod/NAME)
#   rn_vm_console NS VM      the guest's "TPM-GUEST: ..." lines (its serial console)
#   rn_vm_said NS VM TEXT    0 when a console line starts with "TPM-GUEST: TEXT"
#   rn_state_loads FILE      0 when a bare swtpm with no key loads a copy of the state file FILE

RN_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RN_NS=vtpm-system
RN_TCTI=

# VTPM_LAUNCHER_IMAGE / VTPM_LAUNCHER_LIBVIRT_IMAGE, if set, name launcher
# images to use instead of the test bed's (one built from a branch and
# imported beside them, without replacing what other runs use).
rn_images_ready() {
  [ -s "$NL_DIR/images.env" ] && . "$NL_DIR/images.env" || return 1
  LAUNCHER_IMAGE=${VTPM_LAUNCHER_IMAGE:-${LAUNCHER_IMAGE:-}}
  LAUNCHER_LIBVIRT_IMAGE=${VTPM_LAUNCHER_LIBVIRT_IMAGE:-${LAUNCHER_LIBVIRT_IMAGE:-}}
  [ -n "${AGENT_IMAGE:-}" ] && [ -n "$LAUNCHER_IMAGE" ]
}

rn_storage_up() {
  local dir=$1 class=$2
  mkdir -p "$dir"
  "$RN_TOP/build/tools/testbed-provisioner" --kubeconfig "$KUBECONFIG" --root "$dir" --local \
    >> "$dir.provisioner.log" 2>&1 &
  RN_PROVISIONER=$! RN_STORE=$dir
  kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $class
  annotations: {storageclass.kubevirt.io/is-default-virt-class: "true"}
provisioner: vtpm-agent.io/testbed
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}

# rn_kubevirt_state_storage DIR CLASS: rn_storage_up, and CLASS as KubeVirt's
# state class (the CR's vmStateStorageClass); at exit the provisioner stops,
# the class goes and the CR's setting is put back as it was.
rn_kubevirt_state_storage() {
  local dir=$1 class=$2 old
  rn_storage_up "$dir" "$class"
  at_exit rn_storage_down
  at_exit "kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1"
  old=$(kubectl -n kubevirt get kv kubevirt -o jsonpath='{.spec.configuration.vmStateStorageClass}')
  kubectl -n kubevirt patch kv kubevirt --type merge \
    -p "{\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$class\"}}}" >/dev/null
  if [ -n "$old" ]; then
    at_exit "kubectl -n kubevirt patch kv kubevirt --type merge -p '{\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$old\"}}}' >/dev/null"
  else
    at_exit "kubectl -n kubevirt patch kv kubevirt --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/configuration/vmStateStorageClass\"}]' >/dev/null"
  fi
}

# rn_agent_on_kubevirt_up TAG: what the suites of the agent on real KubeVirt
# (09, 10-kubevirt-*) share, in a suite (lib.sh's ok/at_exit; $NS set): a
# scratch directory $T, KubeVirt's state class $NS-rwx on it, then the agent
# as shipped and its Plugin (two TAP tests). At exit the VMs, the Plugin and
# the agent go, then the class and the directory.
rn_agent_on_kubevirt_up() {
  T=$(mktemp -d "$VTPM_RUN/e2e-$1.XXXXXX")
  at_exit "rm -rf '$T'"
  rn_kubevirt_state_storage "$T/store" "$NS-rwx"
  at_exit "kubectl -n $NS delete vm --all --wait=true --timeout=120s >/dev/null 2>&1; rn_agent_undeploy"
  ok "kubectl apply -k deploy/overlays/testbed: an agent pod Ready on every node" rn_agent_deploy
  ok "kubectl apply -k deploy/kubevirt-plugin: KubeVirt's Plugin vtpm-agent" \
    sh -c "kubectl apply -k '$RN_TOP/deploy/kubevirt-plugin' >/dev/null"
  at_exit "kubectl delete -k '$RN_TOP/deploy/kubevirt-plugin' --ignore-not-found >/dev/null 2>&1"
}

rn_storage_down() {
  if [ -n "${RN_PROVISIONER:-}" ]; then kill "$RN_PROVISIONER" 2>/dev/null; wait "$RN_PROVISIONER" 2>/dev/null || true; fi
  # And by its command line: a provisioner left running would race the next
  # suite's own for every claim of a test-bed class (and make `local` PVs).
  if [ -n "${RN_STORE:-}" ]; then pkill -f "testbed-provisioner .*--root $RN_STORE --local" 2>/dev/null || true; fi
  RN_PROVISIONER=
  return 0
}

_rn_agents_ready() {
  local want have
  want=$(kubectl get nodes -o name | wc -l)
  have=$(kubectl -n $RN_NS get ds vtpm-agent -o jsonpath='{.status.numberReady}/{.status.updatedNumberScheduled}/{.status.desiredNumberScheduled}' 2>/dev/null)
  [ "$have" = "$want/$want/$want" ]
}

_rn_controller_ready() {
  [ "$(kubectl -n $RN_NS get deploy vtpm-controller -o jsonpath='{.status.readyReplicas}/{.status.updatedReplicas}/{.spec.replicas}' 2>/dev/null)" = 1/1/1 ]
}

# The key broker's TLS material, as an operator (or cert-manager) would
# provide it: a CA of the test bed's own ($VTPM_RUN/broker-pki) and a server
# certificate for the Service's names and node-1's address (where the test
# bed runs it), as the Secret vtpm-controller-tls and the ConfigMap
# vtpm-controller-ca. Made once per test bed; applied every time.
rn_broker_tls() {
  local d=${VTPM_RUN:-/tmp/vtpm-testbed}/broker-pki ip
  ip=$(nl_ip 1)
  mkdir -p "$d"
  if [ ! -s "$d/tls.crt" ]; then
    ( umask 077
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=vtpm-testbed-broker-ca \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=vtpm-controller.vtpm-system.svc \
        -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null &&
      openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
        -extfile <(printf 'subjectAltName=DNS:vtpm-controller.vtpm-system.svc,DNS:vtpm-controller.vtpm-system.svc.cluster.local,IP:%s\nextendedKeyUsage=serverAuth\n' "$ip") \
        -out "$d/tls.crt" 2>/dev/null ) || { rm -f "$d/tls.crt"; return 1; }
  fi
  kubectl apply -f "$RN_TOP/manifests/namespace.yaml" >/dev/null || return 1
  kubectl -n $RN_NS create secret tls vtpm-controller-tls --cert "$d/tls.crt" --key "$d/tls.key" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null || return 1
  kubectl -n $RN_NS create configmap vtpm-controller-ca --from-file ca.crt="$d/ca.crt" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

rn_agent_deploy() {
  # Fresh pods: the image behind the testbed tag may have been rebuilt.
  rn_agent_undeploy
  rn_broker_tls || { echo "cannot make the key broker's TLS certificate" >&2; return 1; }
  # The overlay names node-1 by the default address (10.213.1.2); a test bed
  # on another VTPM_NODE_NET gets its own.
  kubectl kustomize "$RN_TOP/deploy/overlays/testbed" | sed "s/\b10\.213\.1\.2\b/$(nl_ip 1)/" |
    kubectl apply -f - >/dev/null || return 1
  rn_wait 180 _rn_agents_ready || {
    echo "the DaemonSet's pods are not Ready on every node:" >&2
    kubectl -n $RN_NS get pods -o wide >&2
    return 1
  }
  rn_wait 120 _rn_controller_ready || {
    echo "the key broker (vtpm-controller) is not Ready:" >&2
    kubectl -n $RN_NS get pods -o wide >&2
    return 1
  }
}

rn_agent_undeploy() {
  # KubeVirt's Plugin first (suite 09 applies it): left behind, it would stop
  # every later VM with a persistent TPM at its node hook.
  kubectl delete plugins.plugin.kubevirt.io vtpm-agent --ignore-not-found >/dev/null 2>&1
  kubectl -n $RN_NS delete ds vtpm-agent --ignore-not-found --wait=false >/dev/null 2>&1
  kubectl -n $RN_NS delete deploy vtpm-controller --ignore-not-found --wait=false >/dev/null 2>&1
  rn_wait 60 sh -c "[ -z \"\$(kubectl -n $RN_NS get pods -l 'app.kubernetes.io/name in (vtpm-agent,vtpm-controller)' -o name 2>/dev/null)\" ]"
}

# rn_wait SECS CMD...: until CMD succeeds.
rn_wait() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.3
  done
}

rn_agent_pod() {
  kubectl -n $RN_NS get pods -l app.kubernetes.io/name=vtpm-agent --field-selector "spec.nodeName=$1" -o json |
    jq -r '.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name' | grep .
}

# The node's number from a pod's spec.nodeName (node-N).
_rn_node_of() { kubectl -n "$1" get pod "$2" -o jsonpath='{.spec.nodeName}' | sed 's/^node-//'; }

rn_container_pid() {
  local ns=$1 pod=$2 id n pid
  id=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')
  id=${id#containerd://}
  n=$(_rn_node_of "$ns" "$pod")
  [ -n "$id" ] && [ -n "$n" ] || return 1
  pid=$(nl_ctr "$n" tasks ls 2>/dev/null | awk -v id="$id" '$1 == id && $3 == "RUNNING" { print $2 }' | grep .) &&
    nl_host_pid "$n" "$pid"   # containerd's pid is the node's (VTPM_NODES_PIDNS)
}

rn_agent_log() {
  local pod uid n
  pod=$(rn_agent_pod "$1") || return 1
  uid=$(kubectl -n $RN_NS get pod "$pod" -o jsonpath='{.metadata.uid}')
  n=${1#node-}
  ls -t "$(nl_dir "$n")/pod-logs/${RN_NS}_${pod}_$uid/agent/"*.log 2>/dev/null | head -1
}

# The launcher's socket as the kubelet has it: launcher-sock in the pod's own
# emptyDir "sockets" (KubeVirt's layout; the agent looks there).
rn_launcher_socket() { echo "$(nl_dir "$1")/kubelet/pods/$2/volumes/kubernetes.io~empty-dir/sockets/launcher-sock"; }
_rn_listening() { [ -S "$(rn_launcher_socket "$1" "$2")" ]; }

# The launcher pod's YAML (what KubeVirt's virt-launcher shares with the agent:
# its labels, its node, its own socket directory, an emptyDir).
rn_launcher_yaml() {
  local pod=$1 vm=$2 node=$3
  cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: "$vm"}
spec:
  nodeSelector: {kubernetes.io/hostname: $node}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  containers:
  - name: compute
    image: $LAUNCHER_IMAGE
    imagePullPolicy: Never
    env: [{name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}]
    volumeMounts: [{name: sockets, mountPath: /var/run/kubevirt/sockets}]
  volumes:
  - {name: sockets, emptyDir: {}}
EOF
}

rn_launcher_start() {
  local ns=$1 pod=$2 vm=$3 node=$4 uid
  rn_launcher_yaml "$pod" "$vm" "$node" | kubectl -n "$ns" apply -f - >/dev/null || return 1
  uid=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.metadata.uid}')
  rn_wait 90 _rn_listening "${node#node-}" "$uid" || {
    echo "launcher $pod on $node is not listening:" >&2
    kubectl -n "$ns" get pod "$pod" -o wide >&2
    return 1
  }
}

rn_launcher_stop() {
  kubectl -n "$1" delete pod "$2" --ignore-not-found --wait=true --timeout=60s >/dev/null
}

rn_swtpm_ctrl() {
  local pid vm_uid
  pid=$(rn_container_pid "$1" "$2") || return 1
  vm_uid=$(kubectl -n "$1" get vm "$3" -o jsonpath='{.metadata.uid}')
  echo "/proc/$pid/root/run/vtpm/$vm_uid.sock"
}

# rn_swtpm_pid VM_UID [NAMES]: pids of processes named NAMES (a pgrep -x
# pattern, default swtpm) whose command line names the VM's uid.
rn_swtpm_pid() {
  local p
  [ -n "$1" ] || return 0
  for p in $(pgrep -x "${2:-swtpm}" 2>/dev/null); do
    grep -qF "$1" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
  return 0
}

rn_guest_start() {
  local ctrl=$1 sock=$2 log=$3
  "$RN_TOP/build/tools/tpm-guest-bridge" --ctrl "$ctrl" --listen "$sock" > "$log" 2>&1 &
  RN_GUEST=$!
  RN_TCTI="cmd:socat - UNIX-CONNECT:$sock"
  rn_wait 10 grep -q '^ready' "$log" || { cat "$log" >&2; return 1; }
}

rn_guest_stop() {
  if [ -n "${RN_GUEST:-}" ]; then kill "$RN_GUEST" 2>/dev/null; wait "$RN_GUEST" 2>/dev/null || true; fi
  RN_GUEST=
  return 0
}

rn_guest() { TPM2TOOLS_TCTI=$RN_TCTI "$@"; }

rn_guest_vm() {
  local ns=$1 name=$2 node=$3 args=$4 tpm=${5:-persistent}
  sed -e "s|localhost/vtpm/tpm-guest:TAG|$TPM_GUEST_IMAGE|" -e "s|^  name: tpm-guest$|  name: $name|" \
    "$RN_TOP/hack/images/tpm-guest/vm.yaml" | kubectl -n "$ns" apply -f - >/dev/null &&
  kubectl -n "$ns" patch vm "$name" --type merge -p "{\"spec\":{\"template\":{\"spec\":{
    \"nodeSelector\":{\"kubernetes.io/hostname\":\"$node\"},
    \"domain\":{\"firmware\":{\"kernelBoot\":{\"kernelArgs\":\"$args\"}}}}}}}" >/dev/null || return 1
  case $tpm in
    persistent) ;;
    ephemeral) kubectl -n "$ns" patch vm "$name" --type json \
                 -p '[{"op":"replace","path":"/spec/template/spec/domain/devices/tpm","value":{}}]' >/dev/null ;;
    none) kubectl -n "$ns" patch vm "$name" --type json \
            -p '[{"op":"remove","path":"/spec/template/spec/domain/devices/tpm"}]' >/dev/null ;;
  esac
}
rn_vmi_on() { [ "$(kubectl -n "$1" get vmi "$2" -o jsonpath='{.status.phase}/{.status.nodeName}' 2>/dev/null)" = "Running/$3" ]; }
rn_vmi_gone() { ! kubectl -n "$1" get vmi "$2" >/dev/null 2>&1; }
rn_vm_launcher() {
  kubectl -n "$1" get pod -l "kubevirt.io=virt-launcher,vm.kubevirt.io/name=$2" --field-selector status.phase=Running \
    -o name | head -1
}
rn_vm_console() {
  kubectl -n "$1" logs "$(rn_vm_launcher "$1" "$2")" -c guest-console-log 2>/dev/null | grep -o 'TPM-GUEST: .*' | tr -d '\r'
}
rn_vm_said() { rn_vm_console "$1" "$2" | grep -q "^TPM-GUEST: $3"; }

rn_state_loads() {
  local copy rc=1
  copy=$(mktemp -d /tmp/vtpm-state-copy.XXXXXX)
  cp "$1" "$copy/tpm2-00.permall" || { rm -rf "$copy"; return 2; }
  if swtpm socket --tpm2 --tpmstate "dir=$copy" --ctrl "type=unixio,path=$copy/c.sock" --log "file=$copy/log" \
       --daemon 2>/dev/null && rn_wait 5 test -S "$copy/c.sock"; then
    swtpm_ioctl --unix "$copy/c.sock" -i >/dev/null 2>&1 && rc=0
    swtpm_ioctl --unix "$copy/c.sock" -s >/dev/null 2>&1
  fi
  RN_STATE_LOG=$(grep -v '^ *$' "$copy/log" 2>/dev/null | tail -2 | tr '\n' ' ')
  rm -rf "$copy"
  return $rc
}
