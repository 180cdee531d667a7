#!/usr/bin/env python3
"""The TPM's part of a live migration's downtime, for `make bench` (issue 22).

While the guest is paused, QEMU reads the source swtpm's three state blobs
over its control channel (CMD_GET_STATEBLOB), sends them in the migration
stream, and on the target stops that swtpm, loads them (CMD_SET_STATEBLOB)
and initialises it (CMD_INIT). This does the same with Debian's swtpm on
the agent's kind of state (encrypted, a provisioned TPM 2.0 with its EK and
storage key): a source swtpm started as a VM's, a target swtpm on a seeded
copy of the permanent state (what the agent prepares), and it times those
seven control commands in one process, the way QEMU sends them. Its
baseline, in the same run: seven control round trips that do no work
(CMD_GET_TPMESTABLISHED). The difference is swtpm's own work.

Each target is checked: its CMD_INIT must succeed (the loaded state
decrypted and accepted), else the run fails.

Usage: swtpm-handover.py WORKDIR [RUNS]
Prints one JSON object: {"handover_ms": {median,min,max,runs},
"round_trips_ms": {...}, "tpm_work_ms": median difference,
"blob_bytes": {"permanent": N, "volatile": N, "savestate": N}}
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

CMD_INIT, CMD_GET_TPMESTABLISHED = 2, 4
CMD_GET_STATEBLOB, CMD_SET_STATEBLOB, CMD_STOP = 12, 13, 14
BLOBS = (("permanent", 1), ("volatile", 2), ("savestate", 3))
KEY_HEX = "00112233445566778899aabbccddeeff" * 2  # a bench key (256 bits, as the agent's DEK), never a real one


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("swtpm closed its control channel")
        buf += chunk
    return buf


def ctrl(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def result(s, what):
    (res,) = struct.unpack(">I", recv_exact(s, 4))
    if res != 0:
        raise RuntimeError(f"{what}: TPM result {res:#x}")


def get_blob(path, btype):
    with ctrl(path) as s:
        # As QEMU asks: decrypted (PTM_STATE_FLAG_DECRYPTED). Without
        # --migration-key, swtpm hands the state out in the clear.
        s.sendall(struct.pack(">IIII", CMD_GET_STATEBLOB, 1, btype, 0))
        res, flags, total, length = struct.unpack(">IIII", recv_exact(s, 16))
        # A non-fatal result (0x800: TPM_RETRY) is a blob that does not
        # exist, as QEMU takes it (savestate, unless the TPM was suspended).
        if res != 0 and not res & 0x800:
            raise RuntimeError(f"CMD_GET_STATEBLOB {btype}: TPM result {res:#x}")
        return flags, recv_exact(s, total) if res == 0 else b""


def set_blob(path, btype, flags, data):
    with ctrl(path) as s:
        s.sendall(struct.pack(">IIII", CMD_SET_STATEBLOB, flags, btype, len(data)) + data)
        result(s, f"CMD_SET_STATEBLOB {btype}")


def simple(path, cmd, payload=b""):
    with ctrl(path) as s:
        s.sendall(struct.pack(">I", cmd) + payload)
        result(s, f"command {cmd}")


def swtpm(work, name, flags):
    d = os.path.join(work, name)
    sock = d + ".ctrl"
    subprocess.run(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={d}", "--ctrl", f"type=unixio,path={sock}",
                    "--key", f"file={work}/key,format=hex,mode=aes-256-cbc", "--pid", f"file={d}.pid",
                    "--log", f"file={d}.log", "--daemon"] + flags, check=True)
    for _ in range(2000):
        if os.path.exists(sock):
            return sock
        time.sleep(0.005)
    raise RuntimeError(f"swtpm {name} has no control socket")


def shutdown(sock):
    try:
        simple(sock, 3)  # CMD_SHUTDOWN: stops and exits
    except (OSError, RuntimeError):
        pass


def stats(v):
    v = sorted(v)
    n = len(v)
    m = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"median": round(m, 3), "min": round(v[0], 3), "max": round(v[-1], 3), "runs": n}


def main():
    work, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "source"))
    with open(os.path.join(work, "key"), "w") as f:
        f.write(KEY_HEX + "\n")
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", os.path.join(work, "source"), "--createek", "--create-spk",
                    "--keyfile", os.path.join(work, "key"), "--cipher", "aes-256-cbc", "--not-overwrite"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    src = swtpm(work, "source", [])
    simple(src, CMD_INIT, struct.pack(">I", 0))
    handover, trips, sizes = [], [], {}
    try:
        for i in range(runs):
            name = f"target-{i}"
            os.makedirs(os.path.join(work, name))
            shutil.copy(os.path.join(work, "source", "tpm2-00.permall"), os.path.join(work, name))
            dst = swtpm(work, name, [])
            try:
                t0 = time.perf_counter()
                blobs = [(t, get_blob(src, t)) for _, t in BLOBS]
                simple(dst, CMD_STOP)
                for t, (flags, data) in blobs:
                    if data:
                        set_blob(dst, t, flags, data)
                simple(dst, CMD_INIT, struct.pack(">I", 0))
                t1 = time.perf_counter()
                for _ in range(7):
                    with ctrl(dst) as s:
                        s.sendall(struct.pack(">I", CMD_GET_TPMESTABLISHED))
                        recv_exact(s, 8)
                t2 = time.perf_counter()
            finally:
                shutdown(dst)
            handover.append((t1 - t0) * 1000)
            trips.append((t2 - t1) * 1000)
            sizes = {n: len(blobs[k][1][1]) for k, (n, _) in enumerate(BLOBS)}
    finally:
        shutdown(src)
    h, r = stats(handover), stats(trips)
    print(json.dumps({"handover_ms": h, "round_trips_ms": r, "tpm_work_ms": round(h["median"] - r["median"], 3),
                      "blob_bytes": sizes}))


if __name__ == "__main__":
    main()
