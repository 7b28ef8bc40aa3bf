"""Bounded load test of `vsr serve` on loopback: C concurrent clients x R requests to /v1/predict,
every answer checked against the model run directly, with and without dynamic batching.

    python benchmarks/serve_load.py --weights srresnet-mse --size 64 --clients 8 --requests 20

Only 127.0.0.1 is ever contacted; each server is a subprocess on a free port, stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from collections.abc import Iterator

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(args: list[str], workdir: str, headers: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `vsr serve` on a free loopback port; yields (base URL, process) once /healthz answers."""
    port = free_port()
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "server.log")  # a file, not a pipe: a full pipe would stall the server
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vsr", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workdir", workdir, *args], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(urllib.request.Request(url + "/healthz", headers=headers or {}), timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None:
                        with open(log_path, "rb") as f:
                            raise RuntimeError(f.read().decode()[-2000:]) from None
                    time.sleep(0.1)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextmanager
def server(args: list[str], workdir: str) -> Iterator[str]:
    """Run `vsr serve` on a free loopback port; yields its base URL once /healthz answers."""
    with server_process(args, workdir) as (url, _):
        yield url


def load(url: str, frames: np.ndarray, expected: np.ndarray, clients: int, requests: int) -> float:
    """Requests per second over ``clients`` threads; raises if any answer is wrong or missing."""
    body = json.dumps({"instances": frames.tolist()}).encode()
    errors: list[str] = []
    done: list[int] = []

    def client() -> None:
        for _ in range(requests):
            req = urllib.request.Request(url + "/v1/predict", data=body, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    pred = np.array(json.loads(r.read())["predictions"])
            except OSError as exc:
                errors.append(str(exc))
                continue
            if pred.shape != expected.shape or np.abs(pred - expected).max() > 1:
                errors.append("wrong prediction")
            done.append(1)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    seconds = time.perf_counter() - start
    if errors or len(done) != clients * requests:
        raise RuntimeError(f"{len(errors)} bad answers, {len(done)} of {clients * requests} done: {errors[:3]}")
    return clients * requests / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="srresnet-mse")
    ap.add_argument("--size", type=int, default=64, help="square input side in pixels")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from vsr.device import resolve_device
    from vsr.inference import Upscaler
    from vsr.weights import load as load_weights

    frames = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    up = Upscaler(load_weights(args.weights).model, device=resolve_device(args.device), precision=args.precision)
    expected = up.upscale(frames).astype(int)
    common = ["--weights", args.weights, "--precision", args.precision, "--device", args.device]
    print(f"{args.clients} clients x {args.requests} requests of 1x{args.size}x{args.size}x3 uint8, weights "
          f"{args.weights}, device {args.device}, precision {args.precision}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (("dynamic batching (window 20 ms, up to 8 frames)", ["--batch-window-ms", "20", "--max-batch-frames", "8"]),
                             ("one request per model call", ["--batch-window-ms", "0", "--max-batch-frames", "1"])):
            with server(common + extra, os.path.join(tmp, label[:3])) as url:
                rps = load(url, frames, expected, args.clients, args.requests)
            print(f"| {label} | {rps:.2f} req/s | all {args.clients * args.requests} answers correct |")


if __name__ == "__main__":
    main()
