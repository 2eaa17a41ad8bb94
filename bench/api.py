"""Benchmark: one API token sending 10,000 requests a minute, and a second token beside it.

    .venv/bin/python bench/api.py                  # 60 s at 10,000 requests/minute
    .venv/bin/python bench/api.py --seconds 20     # quicker (same rate)

`syndicate serve` runs in its own process on 127.0.0.1 (SQLite, `[api] rate_limit` at its
default of 600 a minute). Then:

1. baseline: the second token alone, one `GET /api/v1/articles` every 100 ms, for 5 s;
2. load: the first token sends `GET /api/v1/articles` paced at --rate a minute from 8
   threads, while the second token keeps probing as in 1.

Prints the first token's answers (200 vs 429, and anything else), the rate achieved, and
the second token's latency p50/p95 alone and under load, with the ratio. The second
token must see only 200s: the first one's 429s are its own (API-6).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def config_for(root: Path) -> Path:
    config = root / "syndicate.toml"
    config.write_text(f"""
[site]
title = "The Community Journal"
base_url = "https://news.example.com"
postal_address = "221 Example Avenue, Springfield, IL 62701, USA"
from_address = "The Community Journal <digest@news.example.com>"
transactional_from = "The Community Journal <hello@news.example.com>"
[paths]
content = "{REPO / "content"}"
templates = "{REPO / "templates"}"
public = "{root / "public"}"
var = "{root / "var"}"
[database]
url = "sqlite:///{root / "var" / "syndicate.db"}"
""")
    return config


def make_tokens(config: Path) -> tuple[str, str]:
    from pipeline.accounts import api_tokens
    from pipeline.app import App
    from pipeline.config import load_settings

    app = App(load_settings(config))
    with app.engine.begin() as conn:
        _, busy = api_tokens.create_token(conn, name="busy", scopes=["articles:read"], created_by="bench")
        _, calm = api_tokens.create_token(conn, name="calm", scopes=["articles:read"], created_by="bench")
    return busy, calm


def wait_up(base: str) -> None:
    import httpx

    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("syndicate serve did not start")


def probe(base: str, raw: str, stop: threading.Event, out: list[float], statuses: collections.Counter) -> None:
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = c.get("/api/v1/articles")
            out.append((time.perf_counter() - t0) * 1000)
            statuses[r.status_code] += 1
            stop.wait(0.1)


def load(base: str, raw: str, rate_per_minute: int, seconds: float, counts: collections.Counter) -> float:
    import httpx

    total = int(rate_per_minute * seconds / 60)
    interval = 60.0 / rate_per_minute
    lock = threading.Lock()
    next_index = [0]
    start = time.perf_counter()

    def worker():
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as c:
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= total:
                    return
                due = start + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                status = c.get("/api/v1/articles").status_code
                with lock:
                    counts[status] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="requests a minute from the first token")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    os.environ["SYNDICATE_SECRET_KEY"] = "bench-" + "k" * 40
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = config_for(root)
        busy, calm = make_tokens(config)
        base = f"http://127.0.0.1:{args.port}"
        server = subprocess.Popen(
            [sys.executable, "-c", "from pipeline.cli import main; main()", "--config", str(config), "serve"]
            + ["--port", str(args.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(base)
            alone: list[float] = []
            alone_status: collections.Counter = collections.Counter()
            stop = threading.Event()
            t = threading.Thread(target=probe, args=(base, calm, stop, alone, alone_status))
            t.start()
            time.sleep(5)
            stop.set()
            t.join()

            loaded: list[float] = []
            loaded_status: collections.Counter = collections.Counter()
            stop = threading.Event()
            t = threading.Thread(target=probe, args=(base, calm, stop, loaded, loaded_status))
            t.start()
            counts: collections.Counter = collections.Counter()
            elapsed = load(base, busy, args.rate, args.seconds, counts)
            stop.set()
            t.join()
        finally:
            server.terminate()
            server.wait(10)
    sent = sum(counts.values())
    print(f"first token: {sent} requests in {elapsed:.1f} s ({sent / elapsed * 60:,.0f}/min, target {args.rate:,}/min)")
    print(
        f"first token: 200 = {counts[200]}, 429 = {counts[429]}, other = {sent - counts[200] - counts[429]}"
        f" (rate_limit 600/min allows ~{600 + 600 * elapsed / 60:,.0f} in {elapsed:.0f} s)"
    )
    print(
        f"second token alone:      p50 {pct(alone, 50):.1f} ms, p95 {pct(alone, 95):.1f} ms "
        f"({len(alone)} requests, statuses {dict(alone_status)})"
    )
    print(
        f"second token under load: p50 {pct(loaded, 50):.1f} ms, p95 {pct(loaded, 95):.1f} ms "
        f"({len(loaded)} requests, statuses {dict(loaded_status)})"
    )
    print(
        f"ratio under load / alone: p50 {pct(loaded, 50) / pct(alone, 50):.2f}x, p95 {pct(loaded, 95) / pct(alone, 95):.2f}x"
    )


if __name__ == "__main__":
    main()
