#!/usr/bin/env python3
"""An outside publisher, the reference for the load generator's own.

    scripts/outside-publisher.py HOST:PORT RATE SECONDS

Waits until a topic has a subscriber on the server (GET /connections), then
POSTs to that topic at RATE/s for SECONDS on an open-model schedule: a
pacing thread (timer slack 1 ns) hands each publish, at its due time, to
one of 16 threads, each with a keep-alive connection of its own
(TCP_NODELAY, head and body in one write). Each publish carries its
intended send time as `data.sent_us`, as the load generator's do, so a load
generator subscribed to the topic (`run --stream topic --publish-rate 0
--url ...`) reports this publisher's `publish_overhead_us` (pts − intended
send time). Prints its POST latency from the intended send time."""
import ctypes
import json
import queue
import socket
import sys
import threading
import time

PR_SET_TIMERSLACK = 29
CONNECTIONS = 16


def connect(host, port):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(sock, method, path, body=b""):
    """One HTTP/1.1 exchange on a keep-alive connection: (status, body)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    head, rest = got.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = next(int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split(b" ")[1]), rest


def subscribed_topic(sock):
    while True:
        _, body = request(sock, "GET", "/connections")
        topics = [c["topic"] for c in json.loads(body)["connections"] if c.get("topic")]
        if topics:
            return topics[0]
        time.sleep(0.05)


def main():
    server, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    host, port = server.rsplit(":", 1)
    ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1)
    path = f"/topics/{subscribed_topic(connect(host, int(port)))}/events"
    due_q, latencies = queue.Queue(), []

    def publisher():
        sock = connect(host, int(port))
        while (job := due_q.get()) is not None:
            k, due, sent_us = job
            data = {"sent_us": sent_us, "k": k, "pad": "x" * 32}
            status, _ = request(sock, "POST", path, json.dumps(data, separators=(",", ":")).encode())
            if status == 201:
                latencies.append(time.monotonic() - due)

    threads = [threading.Thread(target=publisher) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    interval = 1.0 / rate
    start, start_us = time.monotonic(), time.time_ns() // 1000
    k = 0
    while k * interval < seconds:
        due = start + k * interval
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        due_q.put((k, due, start_us + round(k * interval * 1e6)))
        k += 1
    for _ in threads:
        due_q.put(None)
    for thread in threads:
        thread.join()
    latencies.sort()
    n = len(latencies)
    print(
        f"outside publisher: {n} of {k} acknowledged; POST from the intended send time "
        f"p50 {latencies[n // 2] * 1e3:.3f} ms, p99 {latencies[int(n * 0.99)] * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
