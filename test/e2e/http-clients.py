#!/usr/bin/env python3
"""Hostile HTTP clients for the agent's /metrics, /healthz, /readyz endpoint
(test/e2e/64-http-slow-client.t). Each prints one result line and exits 0.

  slow PORT INTERVAL GIVE_UP
      Connect to 127.0.0.1:PORT and send a request whose headers never end,
      one byte every INTERVAL seconds. Prints "connected", then either
      "closed by the server after S s" or "still open after GIVE_UP s".
  idle PORT COUNT FIRST_SRC PER_SRC HOLD
      Open COUNT connections that send nothing, from source addresses
      127.0.0.FIRST_SRC, 127.0.0.(FIRST_SRC+1), ... (PER_SRC connections per
      address), and hold them. Prints "opened N" once they are connected,
      then "open N after S s" every second until HOLD seconds passed or all
      were closed by the server."""
import select
import socket
import sys
import time


def slow(port, interval, give_up):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    t0 = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1_000_000
    print("connected", flush=True)
    for b in request:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        r, _, _ = select.select([s], [], [], interval)
        if r:
            try:
                if s.recv(4096) == b"":
                    break
            except OSError:
                break
            # An answer (e.g. 408) is as good as a close: keep reading until EOF.
        if time.monotonic() - t0 > give_up:
            print(f"still open after {give_up:.0f} s", flush=True)
            return
    print(f"closed by the server after {time.monotonic() - t0:.1f} s", flush=True)


def idle(port, count, first_src, per_src, hold):
    # All at once, non-blocking: a server that stops accepting must not make
    # this take count x the connect timeout. 3 s for all of them.
    pending = []
    for i in range(count):
        src = f"127.0.0.{first_src + i // per_src}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((src, 0))
        s.connect_ex(("127.0.0.1", port))
        pending.append(s)
    socks = []
    deadline = time.monotonic() + 3
    while pending and time.monotonic() < deadline:
        _, w, _ = select.select([], pending, [], max(0, deadline - time.monotonic()))
        for s in w:
            pending.remove(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                socks.append(s)
            else:
                s.close()
    for s in pending:
        s.close()
    t0 = time.monotonic()
    print(f"opened {len(socks)}", flush=True)
    open_ = set(socks)
    while open_ and time.monotonic() - t0 < hold:
        r, _, _ = select.select(list(open_), [], [], 1.0)
        for s in r:
            try:
                if s.recv(4096) == b"":
                    open_.discard(s)
            except OSError:
                open_.discard(s)
        print(f"open {len(open_)} after {time.monotonic() - t0:.1f} s", flush=True)
    for s in socks:
        s.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "slow":
        slow(int(args[0]), float(args[1]), float(args[2]))
    elif cmd == "idle":
        idle(int(args[0]), int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
