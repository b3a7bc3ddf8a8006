"""Holds N idle connections through a tapline proxy and prints its memory per connection.

    python3 bench/idle_conns.py TAPLINE_PID KIND ADDR N [ORIGIN]

KIND is `mapping` (connect to a tcp mapping at ADDR and stay silent), `tunnel` (a CONNECT
tunnel through the forward proxy at ADDR to ORIGIN, answered, then silent) or `keepalive`
(one HTTP request to ORIGIN through the forward proxy at ADDR, answered, connection kept).
Prints: KIND N rss_before_kib rss_after_kib kib_per_connection.
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed before an answer")
        data += chunk
    return data


def main():
    pid, kind, addr, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    origin = sys.argv[5] if len(sys.argv) > 5 else None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = addr.rsplit(":", 1)
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        if kind == "tunnel":
            s.sendall(f"CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode())
            read_head(s)
        elif kind == "keepalive":
            s.sendall(f"GET http://{origin}/status/204 HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode())
            read_head(s)
        conns.append(s)
    time.sleep(1.0)
    after = rss_kib(pid)
    print(f"{kind} {n} {before} {after} {(after - before) / n:.1f}")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
