"""`vsr serve` under attack, on loopback: peak RSS growth of the server and `/healthz` latency while hostile
requests run beside normal ones (issue #13). Bounded: each hostile kind is sent ``--rounds`` times,
the normal clients and the `/healthz` probe stop when the attack is over.

    python benchmarks/serve_hostile.py --weights srresnet-mse --rounds 3

Hostile requests: bodies declared over the limit, chunked bodies that never end, an unauthenticated
100 MB upload, a 30000x30000 1-bit PNG (a decompression bomb of ~110 KB), 100,000-deep JSON, a
5,000-digit integer, a stalled body, a foreign Host header. Normal ones: /v1/predict of a 1x16x16x3
frame (each answer checked) and /healthz every 20 ms. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import multiprocessing
import re
from collections import Counter
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import server_process  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels, compressed row by row (never held whole)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(name: str, data: bytes, boundary: str = "vsrbench") -> tuple[bytes, str]:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | Iterator[bytes] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int | str, float]:
    """(status or what went wrong, seconds); a server that refuses mid-upload and closes counts as 'closed'."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    status: int | str
    try:
        try:
            conn.request(method, path, body=body, headers=headers or {},
                         encode_chunked=not isinstance(body, (bytes, type(None))))
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered before the body was sent and closed: its answer may still be readable
        status = conn.getresponse().status
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        status = "reset"  # refused and closed with the upload unread (the server log has the status)
    except socket.timeout:
        status = "timeout"
    finally:
        conn.close()
    return status, time.perf_counter() - start


def hostile_requests(port: int, limits: dict[str, int]) -> dict[str, Callable[[], tuple[int | str, float]]]:
    bomb, bomb_type = multipart("bomb.png", png_bomb(30000, 30000))
    deep = b"[" * 100_000 + b"]" * 100_000
    huge_int = b'{"instances": ' + b"9" * 5000 + b"}"
    json_h = {"content-type": "application/json", **AUTH}

    def endless(total: int, piece: int = 1 << 20) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * piece
            sent += piece

    def declared_over() -> tuple[int | str, float]:
        n = limits["predict"] + 1  # declares one byte too many, then tries to send it all
        return request(port, "POST", "/v1/predict", endless(n), {**json_h, "content-length": str(n)})

    def chunked_over() -> tuple[int | str, float]:
        return request(port, "POST", "/v1/predict", endless(2 * limits["predict"]), json_h)

    def upload_no_token() -> tuple[int | str, float]:
        body, ctype = multipart("big.mp4", b"\x00" * (100 << 20))
        return request(port, "POST", "/v1/jobs", body, {"content-type": ctype})

    def upload_over() -> tuple[int | str, float]:
        head, ctype = multipart("big.mp4", b"")
        body = itertools.chain([head[: head.index(b"\r\n\r\n") + 4]], endless(limits["jobs"] + (8 << 20)))
        return request(port, "POST", "/v1/jobs", body, {"content-type": ctype, **AUTH})

    def stalled() -> tuple[int | str, float]:
        def trickle() -> Iterator[bytes]:
            yield b'{"instances": '
            time.sleep(limits["read_timeout"] + 1)
            yield b"[]}"
        return request(port, "POST", "/v1/predict", trickle(), json_h)

    return {
        "Content-Length over the /v1/predict limit": declared_over,
        "chunked body over the /v1/predict limit": chunked_over,
        "100 MB upload without the token": upload_no_token,
        "chunked upload over --max-upload-mb": upload_over,
        "30000x30000 1-bit PNG bomb (%d KB)" % (len(bomb) // 1024):
            lambda: request(port, "POST", "/v1/images", bomb, {"content-type": bomb_type, **AUTH}),
        "100,000-deep JSON": lambda: request(port, "POST", "/v1/predict", deep, json_h),
        "5,000-digit integer": lambda: request(port, "POST", "/v1/predict", huge_int, json_h),
        "stalled body": stalled,
        "foreign Host header": lambda: request(port, "GET", "/v1/models", None, {"host": "evil.example", **AUTH}),
    }


def probe_health(port: int, stop, out) -> None:
    """GET /healthz every 20 ms until ``stop``; in its own process, so the attackers' threads do not share its GIL."""
    latencies = []
    while not stop.is_set():
        status, seconds = request(port, "GET", "/healthz", timeout=30)
        latencies.append((time.time(), seconds if status == 200 else float("inf")))
        time.sleep(0.02)
    out.put(latencies)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="srresnet-mse")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--rounds", type=int, default=3, help="times each hostile request is sent")
    ap.add_argument("--max-pixels", type=int, default=262_144)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--max-upload-mb", type=float, default=64)
    ap.add_argument("--read-timeout", type=float, default=2)
    args = ap.parse_args()
    from vsr.serve.requests import Limits

    lim = Limits(max_pixels=args.max_pixels, max_batch=args.max_batch, max_video_bytes=int(args.max_upload_mb * 2**20))
    limits = {"predict": lim.body_limit("POST", "/v1/predict", "application/json"),
              "jobs": lim.body_limit("POST", "/v1/jobs", "multipart/form-data"), "read_timeout": args.read_timeout}
    frames = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    normal_body = json.dumps({"instances": frames.tolist()}).encode()
    flags = ["--weights", args.weights, "--device", args.device, "--precision", args.precision, "--token", TOKEN,
             "--max-pixels", str(args.max_pixels), "--max-batch", str(args.max_batch),
             "--max-upload-mb", str(args.max_upload_mb), "--read-timeout", str(args.read_timeout)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; weights {args.weights}, "
          f"device {args.device}, {args.precision}; limits: /v1/predict JSON {limits['predict'] / 2**20:.1f} MB, "
          f"/v1/jobs {limits['jobs'] / 2**20:.1f} MB, read timeout {args.read_timeout:g} s; {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp, server_process(flags, tmp, headers=AUTH) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        expected = None
        for _ in range(5):  # warm-up, and the reference answer
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/v1/predict", normal_body, {"content-type": "application/json", **AUTH})
            expected = json.loads(conn.getresponse().read())["predictions"]
            conn.close()
        baseline = rss_bytes(proc.pid)
        stop = threading.Event()
        peak = [baseline]
        normal = {"ok": 0, "bad": 0}

        def sample_rss() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes(proc.pid))
                time.sleep(0.02)

        def normal_client() -> None:
            while not stop.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    conn.request("POST", "/v1/predict", normal_body, {"content-type": "application/json", **AUTH})
                    r = conn.getresponse()
                    good = r.status == 200 and json.loads(r.read())["predictions"] == expected
                except OSError:
                    good = False
                finally:
                    conn.close()
                normal["ok" if good else "bad"] += 1

        ctx = multiprocessing.get_context("spawn")
        probe_stop, probe_out = ctx.Event(), ctx.Queue()
        prober = ctx.Process(target=probe_health, args=(port, probe_stop, probe_out))
        prober.start()
        time.sleep(4.0)  # the probe process starts, then probes a quiet server (the reference)
        background = [threading.Thread(target=f, daemon=True) for f in (sample_rss, normal_client)]
        for t in background:
            t.start()
        results: dict[str, list[tuple[int | str, float]]] = {}
        started, attack_t0 = time.perf_counter(), time.time()
        attacks = hostile_requests(port, limits)
        for _ in range(args.rounds):
            threads = []
            for name, attack in attacks.items():  # all kinds at once, each in its own thread
                t = threading.Thread(target=lambda n=name, a=attack: results.setdefault(n, []).append(a()))
                threads.append(t)
                t.start()
            for t in threads:
                t.join(timeout=300)
        attack_s, attack_t1 = time.perf_counter() - started, time.time()
        stop.set()
        probe_stop.set()
        health = probe_out.get(timeout=60)
        prober.join(timeout=60)
        for t in background:
            t.join(timeout=60)
        alive = proc.poll() is None
        with open(os.path.join(tmp, "server.log")) as f:  # the server's own line per request
            logged = Counter(" ".join(m.groups()) for m in re.finditer(r"(POST|GET) (\S+) (\d+) ", f.read())
                             if m.group(3) != "200")
    quiet = np.array([s for t, s in health if t < attack_t0 - 0.5]) * 1000
    h = np.array([s for t, s in health if attack_t0 <= t <= attack_t1]) * 1000
    print(f"| hostile request | answers ({args.rounds} rounds) | slowest answer |")
    print("|---|---|---|")
    for name, rs in results.items():
        print(f"| {name} | {', '.join(str(s) for s, _ in rs)} | {max(t for _, t in rs):.2f} s |")
    print("refusals in the server's log: " + ", ".join(f"{k} x{n}" for k, n in sorted(logged.items())))
    print(f"attack phase {attack_s:.1f} s; server alive after it: {alive}")
    print(f"server RSS: baseline {baseline / 2**20:.0f} MB, peak {peak[0] / 2**20:.0f} MB, "
          f"growth {(peak[0] - baseline) / 2**20:.0f} MB (target < 200 MB)")
    for label, x in (("quiet server", quiet), ("under attack", h)):
        print(f"/healthz, {label}: {len(x)} probes, p50 {np.percentile(x, 50):.1f} ms, p99 {np.percentile(x, 99):.1f} ms, "
              f"max {x.max():.1f} ms" + (" (target p99 < 100 ms)" if x is h else ""))
    worst = sorted(health, key=lambda p: -p[1])[:3]
    print("slowest probes at " + ", ".join(f"+{t - attack_t0:.1f} s ({s * 1000:.0f} ms)" for t, s in worst)
          + " from the attack's start")
    print(f"normal /v1/predict beside the attack: {normal['ok']} correct, {normal['bad']} wrong or failed")


if __name__ == "__main__":
    main()
