#!/usr/bin/env bash
# Issue 7, point 1, over the whole run: every request the agents made while the
# suites ran (the API server's audit log, by user agent) was made as the
# product's ServiceAccount with a TokenRequest token, and the real RBAC
# authorizer allowed every one of them: the least-privilege rules are enough
# for everything the suites exercise, and no admission policy (manifests/
# node-scope.yaml) refused one. Runs last (99). `vtpm-agent --check`
# calls (/version, selfsubjectreviews) are left out: suite 13 runs them with
# other credentials on purpose, and so are suite 66's writes as a pre-upgrade
# agent (User-Agent vtpm-agent/0.0-legacy, which gives the field manager
# "vtpm-agent" an old agent wrote under, sent with the admin's credentials). $E2E_SINCE (set by hack/run-tests.sh) limits
# the look to this run when $VTPM_RUN is reused.
. "$(dirname "$0")/lib.sh"
require_cluster
audit=$VTPM_RUN/logs/audit.log
[ -s "$audit" ] || skip_all "no audit log at $audit"
since=${E2E_SINCE:-}
reqs=$(jq -c --arg since "$since" '
  select((.userAgent // "") | startswith("vtpm-agent/"))
  | select(.userAgent | startswith("vtpm-agent/0.0-legacy") | not)
  | select(.stage == "ResponseComplete" and .requestReceivedTimestamp >= $since)
  | select(.requestURI != "/version" and (.requestURI | test("selfsubjectreviews") | not))
  | {user: .user.username, verb, uri: .requestURI, code: .responseStatus.code,
     jti: ((.user.extra["authentication.kubernetes.io/credential-id"] // [""])[0] | startswith("JTI=")),
     decision: (.annotations["authorization.k8s.io/decision"] // ""),
     policy: ((.responseStatus.message // "") | test("ValidatingAdmissionPolicy"))}' "$audit")
n=$(grep -c . <<<"$reqs" || true)
[ "$n" -gt 0 ] || skip_all "no agent request in the audit log since '${since:-the start}'"
plan 4
diag "$n agent requests since ${since:-the start of the log}"
by_sa=$(jq -r 'select(.user | test("^system:serviceaccount:[^:]+:vtpm-(agent|controller)$"))' <<<"$reqs" | jq -s length)
is "$by_sa" "$n" "all $n agent requests authenticated as a vtpm-agent (node) or vtpm-controller (key broker) ServiceAccount" ||
  diag "$(jq -r 'select(.user | test("^system:serviceaccount:[^:]+:vtpm-(agent|controller)$") | not) | "\(.user) \(.verb) \(.uri)"' <<<"$reqs" | sort | uniq -c | head -20)"
bound=$(jq -r 'select(.jti)' <<<"$reqs" | jq -s length)
is "$bound" "$n" "every one carried a bound TokenRequest token (a JTI credential id), not a legacy Secret token"
denied=$(jq -r 'select(.decision == "forbid") | "\(.user) \(.verb) \(.uri)"' <<<"$reqs")
is "$denied" "" "the RBAC authorizer allowed every agent request (least privilege covers what the suites exercise)"
refused=$(jq -r 'select(.policy) | "\(.user) \(.verb) \(.uri)"' <<<"$reqs")
is "$refused" "" "no agent request was refused by the node-scope admission policies (they admit what the agents do)"
