#!/usr/bin/python3
"""Search files, directory trees and every process's /proc/<pid>/cmdline and
/proc/<pid>/environ for key material (used by 55-keys-scan.t).

    key-scan.py NEEDLES TARGET...

NEEDLES is a file (keep it 0600, outside the scanned places) with one key per
line, "LABEL HEX" (e.g. "dek 3f1a..."). Each key is searched in four forms:
raw bytes, lower-case hex, upper-case hex and standard base64 (with and
without padding). Keys come from a file, never argv, so the scan itself does
not put them where it looks.

A TARGET is a file, a directory (every regular file below it, symlinks not
followed, other filesystems included: bind mounts are what we look at), or
the word "proc" for the cmdline and environ of every process on the machine.

Prints one line "HIT LABEL FORM WHERE" per finding, and a summary line
"scanned N files, M processes, B bytes" on stderr. Exit 0 when nothing was
found, 1 on findings, 2 on usage errors or when a named target is missing.
"""
import base64
import binascii
import os
import sys


def forms(label, key):
    b64 = base64.b64encode(key)
    yield label, "raw", key
    yield label, "hex", binascii.hexlify(key)
    yield label, "HEX", binascii.hexlify(key).upper()
    yield label, "base64", b64
    if b64.rstrip(b"=") != b64:
        yield label, "base64-nopad", b64.rstrip(b"=")


def load_needles(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            label, hexkey = line.split()
            key = binascii.unhexlify(hexkey)
            if len(key) < 16:
                sys.exit("key-scan: key %s is shorter than 16 bytes: a scan would be meaningless" % label)
            out.extend(forms(label, key))
    if not out:
        sys.exit("key-scan: no keys in %s" % path)
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    needles = load_needles(sys.argv[1])
    hits, nfiles, nprocs, nbytes = [], 0, 0, 0

    def scan(data, where):
        nonlocal nbytes
        nbytes += len(data)
        for label, form, n in needles:
            if n in data:
                hits.append("HIT %s %s %s" % (label, form, where))

    def scan_file(path):
        nonlocal nfiles
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return  # vanished meanwhile, or a socket/fifo
        nfiles += 1
        scan(data, path)

    for target in sys.argv[2:]:
        if target == "proc":
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                got = False
                for what in ("cmdline", "environ"):
                    try:
                        with open("/proc/%s/%s" % (pid, what), "rb") as f:
                            data = f.read()
                    except OSError:
                        continue  # exited meanwhile
                    got = True
                    scan(data, "/proc/%s/%s" % (pid, what))
                nprocs += got
        elif os.path.isdir(target):
            for root, dirs, files in os.walk(target):
                for name in files:
                    p = os.path.join(root, name)
                    if os.path.isfile(p) and not os.path.islink(p):
                        scan_file(p)
        elif os.path.isfile(target):
            scan_file(target)
        else:
            print("key-scan: no such target %s" % target, file=sys.stderr)
            return 2
    for h in hits:
        print(h)
    print("scanned %d files, %d processes, %d bytes" % (nfiles, nprocs, nbytes), file=sys.stderr)
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
