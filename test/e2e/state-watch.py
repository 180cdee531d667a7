#!/usr/bin/env python3
"""Watch a VM's state volume from the host, for the live-migration suite
(test/e2e/10-kubevirt-migration.t, issue 22 acceptance 3).

  state-watch.py watch VOLUME LOG    every 50 ms until SIGTERM: every process
                                     that holds a file of VOLUME open (by
                                     device and inode: a process in another
                                     mount namespace sees other paths), and
                                     every change of a file's size or mtime
  state-watch.py report LOG          a JSON summary of LOG (below)

LOG lines (t: CLOCK_REALTIME seconds):
  t OPEN pid comm relpath     the process holds relpath open (first seen)
  t CLOSE pid comm relpath    no longer
  t WRITE relpath size mtime  the file changed (or appeared)
  t GONE relpath              the file went

The report: {"writers": {relpath: [pid...]}, "overlaps": [[t, relpath,
[pids]]], "holders": {dir: [[pid, comm]...]}, "writes": {dir: [first, last]},
"samples": N}, where dir is the generation directory ("." for the volume's
root) and a file's writers are the processes that held it open while it
changed (sampled)."""
import json
import os
import signal
import sys
import time


def files_of(volume):
    out = {}
    for root, dirs, files in os.walk(volume, followlinks=False):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[(st.st_dev, st.st_ino)] = (os.path.relpath(path, volume), st.st_size, st.st_mtime_ns)
    return out


def holders(inodes):
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in inodes:
                try:
                    with open("/proc/%s/comm" % pid) as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found[(int(pid), inodes[key][0])] = comm
    return found


def watch(volume, log_path):
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    seen_files, seen_open = {}, {}
    with open(log_path, "w", buffering=1) as log:
        while not stop:
            t = time.time()
            inodes = files_of(volume)
            now_files = {rel: (size, mtime) for rel, size, mtime in inodes.values()}
            for rel, sm in now_files.items():
                if seen_files.get(rel) != sm:
                    log.write("%.3f WRITE %s %d %d\n" % (t, rel, sm[0], sm[1]))
            for rel in seen_files.keys() - now_files.keys():
                log.write("%.3f GONE %s\n" % (t, rel))
            seen_files = now_files
            now_open = holders(inodes)
            for (pid, rel), comm in now_open.items():
                if (pid, rel) not in seen_open:
                    log.write("%.3f OPEN %d %s %s\n" % (t, pid, comm, rel))
            for (pid, rel), comm in seen_open.items():
                if (pid, rel) not in now_open:
                    log.write("%.3f CLOSE %d %s %s\n" % (t, pid, comm, rel))
            seen_open = now_open
            time.sleep(0.05)


def gen_dir(rel):
    return rel.split("/", 1)[0] if "/" in rel else "."


def report(log_path):
    open_now = {}  # rel -> {pid: comm}
    writers, overlaps, hold, writes = {}, [], {}, {}
    samples = 0
    with open(log_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            t, what = float(parts[0]), parts[1]
            samples += 1
            if what == "OPEN":
                pid, comm, rel = int(parts[2]), parts[3], parts[4]
                open_now.setdefault(rel, {})[pid] = comm
                hold.setdefault(gen_dir(rel), {})[pid] = comm
                if len(open_now[rel]) > 1:
                    overlaps.append([t, rel, sorted(open_now[rel])])
            elif what == "CLOSE":
                pid, rel = int(parts[2]), parts[4]
                open_now.get(rel, {}).pop(pid, None)
            elif what == "WRITE":
                rel = parts[2]
                d = gen_dir(rel)
                first_last = writes.setdefault(d, [t, t])
                first_last[1] = t
                for pid in open_now.get(rel, {}):
                    if pid not in writers.setdefault(rel, []):
                        writers[rel].append(pid)
    print(json.dumps({"writers": writers, "overlaps": overlaps,
                      "holders": {d: sorted([[p, c] for p, c in h.items()]) for d, h in hold.items()},
                      "writes": writes, "samples": samples}, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
