#!/usr/bin/env bash
# Assemble the parts hack/run-bench.sh wrote into one JSON document and print
# the table. Usage: report.sh PARTS_DIR STAMP LOADAVG WALL_SECONDS OUT_JSON
set -euo pipefail
parts=$1 stamp=$2 load=$3 wall=$4 out=$5

slurp() { [ -s "$parts/$1" ] && cat "$parts/$1" || echo null; }
footprint=$( [ -s "$parts/footprint.jsonl" ] && jq -s -c . "$parts/footprint.jsonl" || echo null)
bursts=$(for f in "$parts"/burst-*.json; do if [ -s "$f" ]; then cat "$f"; fi; done | jq -s -c .)
phases=$( [ -s "$parts/phases.jsonl" ] && jq -s -c . "$parts/phases.jsonl" || echo null)
vmcreate=$( [ -s "$parts/vm-create.jsonl" ] && jq -s -c . "$parts/vm-create.jsonl" || echo null)
baselines=$(for f in "$parts"/baseline-*.json; do if [ -s "$f" ]; then cat "$f"; fi; done | jq -s -c .)

jq -n --arg stamp "$stamp" --arg load "$load" --argjson wall "$wall" --arg host "$(hostname)" \
  --argjson cores "$(nproc)" --argjson footprint "$footprint" --argjson bursts "$bursts" \
  --argjson baselines "$baselines" --argjson steady "$(slurp steady.json)" --argjson restart "$(slurp restart.json)" \
  --argjson callgrind "$(slurp callgrind.json)" --argjson node "$(slurp node.json)" \
  --argjson kubevirt "$(slurp kubevirt.json)" \
  --argjson bare "$(slurp swtpm-bare.json)" --argjson handover "$(slurp swtpm-handover.json)" --argjson phases "$phases" --argjson vmcreate "$vmcreate" '
  {stamp: $stamp, host: $host, cores: $cores, loadavg_at_end: $load, wall_s: $wall,
   footprint: $footprint, burst: $bursts, baseline: $baselines, steady: $steady, restart: $restart,
   callgrind: $callgrind, node: $node, kubevirt: $kubevirt, swtpm_bare: $bare, swtpm_handover: $handover, phases: $phases, vm_create_no_agent: $vmcreate}
  | .ratios = [ .burst[]? as $b | (.baseline[]? | select(.creates == $b.vms)) as $p
      | {vms: $b.vms, baseline_wall_s: $p.wall_s,
         pvcs_ratio: (if $b.all_pvcs_s then ($b.all_pvcs_s / $p.wall_s) else null end),
         status_ratio: (if $b.all_status_s then ($b.all_status_s / $p.wall_s) else null end)} ]
  | .footprint_per_object = (if (.footprint | type) == "array" and (.footprint | length) > 1 then
      [ .footprint[0] as $f0 | .footprint[1:][] | {vms, bytes_per_vm: (((.rss_kb - $f0.rss_kb) * 1024 / .vms) | floor),
        anon_bytes_per_vm: ((((.anon_kb // 0) - ($f0.anon_kb // 0)) * 1024 / .vms) | floor)} ]
      else null end)
' > "$out"

# The table.
jq -r '
  def f(x): if x == null then "-" elif (x | type) == "number" then (x * 1000 | round / 1000 | tostring) else (x | tostring) end;
  def mib(kb): if kb == null then "-" else ((kb / 1024 * 10 | round) / 10 | tostring) + " MiB" end;
  def row(a; b; c; d): [a, b, c, d] | @tsv;
  (["measure", "value", "baseline / goal", "note"] | @tsv),
  (([.vm_create_no_agent[]? | .creates_per_s] | if length > 0 then add / length else null end) as $vc |
   .burst[]? as $b | (first(.baseline[]? | select(.creates == $b.vms)) // {}) as $p |
    row("burst \($b.vms) VMs: all \($b.persistent) state PVCs exist"; "\(f($b.all_pvcs_s)) s";
        "\($p.creates) bare PVC creates: \(f($p.wall_s)) s (\($p.creates_per_s)/s)";
        "ratio \(f(if $b.all_pvcs_s and $p.wall_s then $b.all_pvcs_s / $p.wall_s else null end)) (goal <= 1.5 at 5000)"),
    row("burst \($b.vms): every TPMState has a status"; "\(f($b.all_status_s)) s";
        "ratio \(f(if $b.all_status_s and $p.wall_s then $b.all_status_s / $p.wall_s else null end))"; "agent alone"),
    row("burst \($b.vms): every TPMState Ready"; "\(f($b.all_ready_s)) s";
        "\($b.ready_seen)/\($b.persistent) Ready"; "includes PV binding by kube-controller-manager"),
    row("burst \($b.vms): VM creates (bench tool)"; "\(f($b.vm_create_wall_s)) s"; "\($b.vm_creates_per_s)/s";
        "PVCs complete \(f(if $b.all_pvcs_s then $b.all_pvcs_s - $b.vm_create_wall_s else null end)) s after the last VM"),
    row("burst \($b.vms): VM creates alone would take"; (if $vc then "\(f($b.vms / $vc)) s" else "-" end);
        (if $vc then "\(f($vc)) VMs/s with no agent" else "" end);
        (if $vc and $p.wall_s then "floor for the ratio: \(f($b.vms / $vc / $p.wall_s))" else "" end)),
    row("burst \($b.vms): latency VM created -> PVC seen"; "p50 \(f($b.latency_pvc.p50_ms)) ms";
        "p99 \(f($b.latency_pvc.p99_ms)) ms"; "n=\($b.latency_pvc.n)"),
    row("burst \($b.vms): latency VM created -> status seen"; "p50 \(f($b.latency_status.p50_ms)) ms";
        "p99 \(f($b.latency_status.p99_ms)) ms"; "n=\($b.latency_status.n)"),
    row("burst \($b.vms): latency VM created -> Ready seen"; "p50 \(f($b.latency_ready.p50_ms)) ms";
        "p99 \(f($b.latency_ready.p99_ms)) ms"; "n=\($b.latency_ready.n)"),
    row("burst \($b.vms): agent requests"; ($b.agent_requests | tostring); "cpu \($b.agent_cpu_s) s";
        "rss \(mib($b.agent_rss_kb))")),
  (.footprint[]? | row("RSS after initial list, \(.vms) VMs"; mib(.rss_kb);
      if .vms == 10000 then "goal < 64 MiB" else "" end;
      "anon \(mib(.anon_kb)), file \(mib(.file_kb)); ready in \(.ready_ms) ms (stand-by)")),
  (.footprint_per_object[]? | row("bytes per cached VM (\(.vms))"; "\(.bytes_per_vm) B"; "anon \(.anon_bytes_per_vm) B";
      "(RSS_N - RSS_0)/N; VMs only (stand-by: no PVCs/TPMStates of its own)")),
  (.steady | select(. != null) | row("steady \(.seconds) s over \(.vms) VMs: CPU"; "\(.cpu_s) s"; "goal ~0";
      "rss \(mib(.rss_kb)), reconciles \(.reconciles)"),
    row("steady: API requests"; (.requests | tostring); "lease renewals \(.lease_updates)";
      "goal: 0 beyond the Lease (WATCH counts when it ends)"),
    row("steady: writes beyond the Lease"; "\(.writes_beyond_lease)"; "goal 0"; "")),
  (.restart | select(. != null) | row("restart over \(.vms) VMs: /readyz"; "\(.ready_ms) ms"; ""; ""),
    row("restart: queue drained"; "\(.drained_ms) ms"; "\(.reconciles) reconciles"; ""),
    row("restart: writes for VMs"; "\(.vm_writes)"; "goal 0"; "requests \(.requests | tostring), lease updates \(.lease_updates)")),
  (.callgrind | select(. != null) |
    row("instructions per watch event (decode + vm_trim)"; "\(.decode.per_event)"; "\(.decode.events) events"; .stream),
    row("instructions per unchanged reconcile (pure part)"; "\(.reconcile.per_event)"; "\(.reconcile.persistent) VMs"; "")),
  (.swtpm_bare as $b | .node | select(. != null and .error == null and .skipped == null) as $n |
    row("node: cold start via agent (launcher -> swtpm answering)"; "\(f($n.cold_s.median)) s";
        "bare \(f($b.cold_s.median)) s"; "ratio \(f($n.cold_s.median / $b.cold_s.median)); provision hist \(f($n.provision_s)) s"),
    row("node: warm start via agent"; "\(f($n.warm_s.median)) s"; "bare \(f($b.warm_s.median)) s";
        "ratio \(f($n.warm_s.median / $b.warm_s.median)) (goal <= 2)"),
    row("node: storm of \($n.storm_n) (maxConcurrentStarts \($n.max_concurrent_starts))"; "\(f($n.storm_s)) s";
        "bare storm \(f($b.storm_s)) s; 1 cold \(f($n.cold_s.median)) s";
        "vs bare storm \(f($n.storm_s / $b.storm_s)); vs 1 cold \(f($n.storm_s / $n.cold_s.median)) (goal <= 3)"),
    (.warm_gets | select(. != null) |
      row("node: GETs in \($n.warm_s.runs) warm starts (\($n.agent // "host") agent)";
          "VM \(.virtualmachines // 0), TPMState \(.tpmstates // 0), PVC \(.persistentvolumeclaims // 0), Secret \(.secrets // 0)";
          "goal 0 each (caches)"; (to_entries | map(select(.key | IN("virtualmachines", "tpmstates", "persistentvolumeclaims", "secrets") | not))
          | map("\(.key) \(.value)") | join(", ")))),
    (.launcher_listen_s | select(. != null) |
      row("node: launcher pod created -> listening (kubelet)"; "\(f(.median)) s"; "storm: last after \(f(.storm_last)) s";
          "included in the starts above; agent share of cold \(f($n.cold_s.median - .median)) s"))),
  (.kubevirt | select(. != null and .error == null and .skipped == null) as $k |
    row("kubevirt: launcher pod -> guest TPM answers, with agent"; "p50 \(f($k.agent.tpm_p50_s)) s";
        "KubeVirt alone p50 \(f($k.kubevirt.tpm_p50_s)) s"; "added \($k.added_tpm_p50_ms) ms (goal < 100), \($k.runs) warm starts each"),
    row("kubevirt: launcher pod -> QEMU starts, with agent"; "p50 \(f($k.agent.qemu_p50_s)) s";
        "KubeVirt alone p50 \(f($k.kubevirt.qemu_p50_s)) s"; "added \($k.added_qemu_p50_ms) ms")),
  (.kubevirt | select(. != null and .error != null) | row("kubevirt phase"; .error; ""; "")),
  (.kubevirt | select(. != null and .skipped != null) | row("kubevirt phase SKIPPED"; .skipped; ""; "")),
  (.node | select(. != null and .error != null) | row("node path"; .error; ""; "")),
  (.node | select(. != null and .skipped != null) | row("node path SKIPPED"; .skipped; ""; "")),
  (select(.node == null or .node.error != null or .node.skipped != null) | .swtpm_bare | select(. != null and .error == null) |
    row("bare swtpm: cold / warm (median)"; "\(f(.cold_s.median)) s / \(f(.warm_s.median)) s"; "storm of \(.storm_n): \(f(.storm_s)) s"; "no agent numbers to compare")),
  (.swtpm_handover | select(. != null and .error == null) |
    row("migration: TPM switchover (blobs out, in, init)"; "\(f(.handover_ms.median)) ms"; "7 empty round trips \(f(.round_trips_ms.median)) ms";
        "swtpm work \(.tpm_work_ms) ms (goal < 50), \(.handover_ms.runs) runs")),
  (.swtpm_handover | select(. != null and .error != null) | row("migration switchover"; .error; ""; "")),
  (select(.phases != null) | row("phase times"; (.phases | map("\(.phase) \(.s)") | join(", ")); "s"; "")),
  row("machine"; "\(.cores) cores, load \(.loadavg_at_end)"; "run \(.wall_s) s"; "numbers are noisy under load")
' "$out" | column -t -s $'\t'
