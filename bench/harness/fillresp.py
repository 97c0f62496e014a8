#!/usr/bin/env python3
"""Writes Redis protocol that fills a keyspace the way cachegate lays it out,
for `redis-cli --pipe` (stdlib only). Used by bench/bench.sh's purge figures
and bench/clear-million.sh.

    python3 fillresp.py N [FOREIGN] [PREFIX] | redis-cli -p PORT --pipe

N records `PREFIXtask:<i>` (a hash with one small entry field and the `__cg`
mark, like cachegate's records), then FOREIGN plain strings
`PREFIXtask:foreign:<i>` that another program wrote (a clear must keep them).
"""
from __future__ import annotations

import sys


def main() -> None:
    n = int(sys.argv[1])
    foreign = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    prefix = sys.argv[3].encode() if len(sys.argv) > 3 else b""
    out = sys.stdout.buffer
    # Every record has the same shape, so build the protocol from a template.
    head = b"*6\r\n$4\r\nHSET\r\n"
    tail = b"$4\r\nanon\r\n$8\r\nCG-entry\r\n$4\r\n__cg\r\n$1\r\n1\r\n"
    batch = []
    for i in range(n):
        key = prefix + b"task:%d" % i
        batch.append(b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail))
        if len(batch) == 10000:
            out.write(b"".join(batch))
            batch.clear()
    for i in range(foreign):
        key = prefix + b"task:foreign:%d" % i
        batch.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$8\r\nnot ours\r\n" % (len(key), key))
    out.write(b"".join(batch))
    out.flush()


if __name__ == "__main__":
    main()
