"""gevent's side of scripts/bench-peers: the same loops as verdant's yield_handoffs and
hub_counts examples, printing "... X ns each" like them.

    python3 peer.py yield N    # N hand-offs between two greenlets calling gevent.sleep(0)
    python3 peer.py channel N  # N ping-pong hops over two gevent.queue.Channel
    python3 peer.py spawn N    # N gevent.spawn + run + join of a trivial greenlet
"""

import sys
import time

import gevent
from gevent.queue import Channel


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "yield"
    n = int(sys.argv[2].replace("_", "")) if len(sys.argv) > 2 else 1_000_000
    start = time.perf_counter_ns()
    if mode == "yield":
        # N hand-offs: each of the two greenlets yields N/2 times.
        def spin():
            for _ in range(n // 2):
                gevent.sleep(0)

        gevent.joinall([gevent.spawn(spin), gevent.spawn(spin)])
    elif mode == "channel":
        # N hops: N/2 round trips between this greenlet and an echoing one.
        ping, pong = Channel(), Channel()

        def echo():
            while True:
                v = ping.get()
                if v is None:
                    return
                pong.put(v + 1)

        e = gevent.spawn(echo)
        v = 0
        for _ in range(n // 2):
            ping.put(v)
            v = pong.get()
        ping.put(None)
        e.join()
    elif mode == "spawn":
        for _ in range(n):
            g = gevent.spawn(int, 1)
            g.join()
    else:
        sys.exit(f"unknown mode {mode!r}: yield, channel or spawn")
    elapsed = time.perf_counter_ns() - start
    print(f"{mode}: {n} in {elapsed / 1e6:.2f}ms: {elapsed / max(n, 1):.1f} ns each")


if __name__ == "__main__":
    main()
