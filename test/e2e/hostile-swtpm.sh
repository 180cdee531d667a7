#!/bin/bash
# A hostile `swtpm` (suite 59): what a tenant puts on its launcher's PATH, and
# what a swtpm compromised through its guest could run. It records what it can
# reach, one "key: value" line each, and then (when a real swtpm is beside it,
# /usr/lib/hostile/swtpm) becomes that swtpm, so the VM works and nobody notices.
#   HOSTILE_OUT     where to write the record (default /tmp/hostile-swtpm.out; "-": stdout)
#   HOSTILE_PORT    a TCP port on 127.0.0.1 in the node's network namespace, answering a banner
#   VICTIM_PID      another VM's swtpm (host pid)
#   VICTIM_STATE    its state directory, as that swtpm sees it
#   VICTIM_CTRL     its control socket, as that swtpm sees it
# They come from /etc/hostile.env when it exists (the tenant wrote it into its
# own image). The key is never printed: only how many bytes arrived.
[ -r /etc/hostile.env ] && . /etc/hostile.env
out=${HOSTILE_OUT:-/tmp/hostile-swtpm.out}

yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }

record() {
  echo "ran: $0"
  echo "args: $*"
  echo "parent: $(tr '\0' ' ' < /proc/$PPID/cmdline 2>/dev/null | cut -c1-200)"
  echo "id: $(id -u 2>/dev/null || echo ?):$(id -g 2>/dev/null || echo ?)"
  echo "netns: $(readlink /proc/self/ns/net)"
  echo "pidns: $(readlink /proc/self/ns/pid)"
  echo "ipcns: $(readlink /proc/self/ns/ipc)"
  grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | sed 's/:\s*/: /'
  # Its own VM's key: a pipe on fd 5 (the agent's --key fd=5). Counted, kept
  # for the real swtpm (a file on fd 5 reads the same). No /proc needed.
  if { true <&5; } 2>/dev/null; then
    k=$(mktemp); cat <&5 > "$k"
    echo "own_key_fd_bytes: $(wc -c < "$k")"
    exec 5< "$k"; rm -f "$k"
  else
    echo "own_key_fd_bytes: none"
  fi
  if [ -n "${HOSTILE_PORT:-}" ]; then
    banner=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HOSTILE_PORT && timeout 2 head -n1 <&3" 2>/dev/null)
    echo "node_listener: ${banner:-unreachable}"
  fi
  if [ -n "${VICTIM_PID:-}" ]; then
    echo "victim_visible: $(yesno test -e /proc/$VICTIM_PID/stat)"
    echo "victim_signal: $(yesno kill -0 "$VICTIM_PID")"
    echo "victim_state_list: $(ls /proc/$VICTIM_PID/root$VICTIM_STATE 2>/dev/null | tr '\n' ' ' | grep . || echo denied)"
    n=$(head -c 64 "/proc/$VICTIM_PID/root$VICTIM_STATE/tpm2-00.permall" 2>/dev/null | wc -c)
    echo "victim_state_read_bytes: $n"
    echo "victim_ctrl_connect: $(yesno timeout 3 socat -u OPEN:/dev/null "UNIX-CONNECT:/proc/$VICTIM_PID/root$VICTIM_CTRL")"
    # The victim's memory holds its key: ptrace and process_vm_readv (a
    # helper the tenant ships; it needs no /proc).
    [ ! -x /usr/lib/hostile/peek ] || /usr/lib/hostile/peek "$VICTIM_PID"
  fi
}
# "-": stdout as it is (a sandbox may have no /dev/stdout).
if [ "$out" = - ]; then record "$@" 2>/dev/null; else record "$@" >> "$out" 2>/dev/null; fi

[ -x /usr/lib/hostile/swtpm ] && exec /usr/lib/hostile/swtpm "$@"
exit 0
