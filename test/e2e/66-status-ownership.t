#!/usr/bin/env bash
# Issue 19, acceptance 3: both writers of a TPMState's status, the state
# controller and a node agent, write it 1,000 times each in the same rounds
# against the real API server, and no field written by one is ever lost to the
# other (read back and checked after every round). build/tools/tpmstate-race
# (test/tools/tpmstate-race.c) writes with the product's own functions
# (agent/tpmstate_status.c: server-side apply, one field manager per writer).
#
# Each writer has the identity the real one has: the agent's ServiceAccount
# with a token bound to a pod on a node, as the kubelet projects into the
# DaemonSet's pods, so the admission policy vtpm-agent-node-tpmstates
# (manifests/node-scope.yaml) judges every write. The node agent runs on
# node-1 (the VM's node); the state controller's leader on node-2.
#
# Then the VM moves: node-2's report replaces node-1's whole (nodeState and
# keys are atomic maps in the CRD; before, node-1's swtpmPid stayed). A status
# written by the release before (merge patches) is taken over. And the
# writes of 605fe88, merge patches from a copy of the object (tpmstate-race
# --mode merge), lose the node agent's fields within the 1,000 rounds: the
# check does catch the bug it is for.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
RACE=${VTPM_TOOLS:-$E2E_TOP/build/tools}/tpmstate-race
KC=${VTPM_TOOLS:-$E2E_TOP/build/tools}/kube-call
n1=$(nl_name 1) n2=$(nl_name 2)
# The Node objects are enough (a bound token takes the node from its pod's
# spec.nodeName); nothing here runs on them.
require_cluster
kubectl get node "$n1" "$n2" >/dev/null 2>&1 || skip_all "needs the test bed's nodes $n1 and $n2 (VTPM_NODES=2)"
[ -x "$RACE" ] && [ -x "$KC" ] || bail_out "no $RACE or $KC: run 'make tools'"
plan 11
setup_namespace e2e-status-ownership
cd "$E2E_TOP"

ANS=vtpm-system
SA=system:serviceaccount:$ANS:vtpm-agent
T=$(mktemp -d /tmp/vtpm-e2e-66.XXXXXX)
LBL=e2e-status-ownership=$NS
at_exit "kubectl -n $ANS delete pods -l $LBL --grace-period=0 --force --ignore-not-found >/dev/null 2>&1; rm -rf '$T'"

# The product's objects but the DaemonSet and the broker: namespace,
# ServiceAccount, RBAC, CRDs and the admission policies.
ok "the product's manifests (all but the DaemonSet) apply" \
  sh -c "kubectl kustomize deploy/overlays/testbed | yq -y 'select(.kind != \"DaemonSet\" and .kind != \"Deployment\")' | kubectl apply -f -"
kubectl wait --for condition=Established --timeout 60s crd/tpmstates.vtpm-agent.io >/dev/null

# Stand-ins for the agent's pods on node-1 and node-2 (the agent's
# ServiceAccount, no token mounted): a token bound to one names its node.
# They need not run: the token takes the node from the pod's spec.nodeName.
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
identity_on() {  # NODE -> $T/NODE.kubeconfig
  local pod=vtpm-agent-standin-66-$1-${NS##*-}
  kubectl -n $ANS apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Pod
metadata: {name: $pod, labels: {e2e-status-ownership: "$NS"}}
spec:
  nodeName: $1
  serviceAccountName: vtpm-agent
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: hold, image: registry.k8s.io/pause:3.10, imagePullPolicy: Never}]
EOF
  ( umask 077; kubectl -n $ANS create token vtpm-agent --bound-object-kind Pod --bound-object-name "$pod" \
      --duration 1h > "$T/$1.token" ) || return 1
  printf '%s\n' "apiVersion: v1" "kind: Config" "current-context: agent" \
    "clusters: [{name: tb, cluster: {server: \"$server\", certificate-authority-data: \"$ca\"}}]" \
    "users: [{name: agent, user: {tokenFile: \"$T/$1.token\"}}]" \
    "contexts: [{name: agent, context: {cluster: tb, user: agent}}]" > "$T/$1.kubeconfig"
}
identity_on "$n1" && identity_on "$n2" || bail_out "cannot make the agent's node-bound identities"
for n in "$n1" "$n2"; do
  who=$(KUBECONFIG=$T/$n.kubeconfig kubectl auth whoami -o json 2>&1)
  is "$(jq -r '.status.userInfo.username + " " + (.status.userInfo.extra["authentication.kubernetes.io/node-name"][0] // "-")' <<<"$who" 2>&1)" \
    "$SA $n" "a writer's identity: the agent's ServiceAccount, bound to a pod on $n"
done

# The policy judges server-side apply too (an apply is an UPDATE to
# admission): node-1's token may not apply a nodeState naming node-2.
k apply -f - >/dev/null <<EOF
apiVersion: vtpm-agent.io/v1alpha1
kind: TPMState
metadata: {name: forged}
spec: {vmName: forged}
EOF
out=$("$KC" --kubeconfig "$T/$n1.kubeconfig" apply "/apis/vtpm-agent.io/v1alpha1/namespaces/$NS/tpmstates/forged/status" \
  "vtpm-node-$n1" 1 "{\"apiVersion\":\"vtpm-agent.io/v1alpha1\",\"kind\":\"TPMState\",\"metadata\":{\"name\":\"forged\",\"namespace\":\"$NS\"},\"status\":{\"nodeState\":{\"node\":\"$n2\",\"phase\":\"Failed\"}}}" 2>&1)
like "$out" "reason=Forbidden.*the node agent on $n1 writes status.nodeState naming its own node only" \
  "the policy refuses node-1's apply of a nodeState naming node-2 (it judges these writes)"

# The race: 1,000 rounds, both writes of a round started together, checked
# after each; then the VM moves to node-2.
t0=$(date +%s%N)
out=$("$RACE" --kubeconfig "$KUBECONFIG" --namespace "$NS" --name race --node "$n1" \
  --state-kubeconfig "$T/$n2.kubeconfig" --node-kubeconfig "$T/$n1.kubeconfig" --rounds 1000 \
  --moved-to "$n2:$T/$n2.kubeconfig" 2>&1)
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
secs=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
diag "$out"
is "$rc" 0 "tpmstate-race (apply) exits 0"
like "$out" "apply: 1000 rounds, both writers in each, checked after each round: nothing lost" \
  "1,000 interleaved rounds by both writers: no field of either lost (${secs} s)"
like "$out" "move: $n2's report replaced $n1's whole \(no swtpmPid, no kekRotation left\)" \
  "the VM moves: $n2's report replaces $n1's whole"
is "$(k get tpmstate race -o name 2>&1)" \
  "Error from server (NotFound): tpmstates.vtpm-agent.io \"race\" not found" "the tool removed its TPMState"

# An upgrade: the release before wrote this status with merge patches (field
# manager "vtpm-agent"), with a RestartRequired condition, swtpmPid and a
# kekRotation that round 1 leaves out. Each writer's first apply takes its
# fields over, so round 1's check finds none of them (they stayed for good
# while the old manager held them).
ok "a status the release before wrote: the writers take it over, what they leave out is gone (20 rounds)" \
  "$RACE" --kubeconfig "$KUBECONFIG" --namespace "$NS" --name race-upgrade --node "$n1" --legacy --rounds 20 \
  --state-kubeconfig "$T/$n2.kubeconfig" --node-kubeconfig "$T/$n1.kubeconfig"

# The writes of 605fe88: the state controller's merge patch of its whole
# status from its copy (the object as read at the start of the round) carries
# an older nodeState over the node agent's newer one. Its leader on node-1
# here: from node-2 the policy would refuse the stale nodeState it carries.
out=$("$RACE" --kubeconfig "$KUBECONFIG" --namespace "$NS" --name race-merge --node "$n1" \
  --state-kubeconfig "$T/$n1.kubeconfig" --node-kubeconfig "$T/$n1.kubeconfig" --rounds 1000 --mode merge 2>&1)
rc=$?
diag "$(head -1 <<<"$out")"
is "$rc" 1 "tpmstate-race --mode merge (the writes of 605fe88) exits 1"
like "$out" "merge: LOST in round [0-9]+ of 1000: the node agent's write is gone: status\.(nodeState|keys)\." \
  "the writes of 605fe88 lose the node agent's fields within 1,000 rounds (the check catches it)"
