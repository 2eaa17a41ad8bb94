"""Benchmark: `syndicate subscribers import` of a 100,000-row CSV, on SQLite and PostgreSQL.

    .venv/bin/python bench/import.py                      # 100,000 rows, both databases
    .venv/bin/python bench/import.py --rows 20000         # quicker
    .venv/bin/python bench/import.py --databases sqlite   # no PostgreSQL here

Per database, in the same run (issue 15 item 3):

(a) ours: `syndicate init`, then `syndicate subscribers import FILE --confirmed --source
    bench`, in a child process (its peak RSS is its own), timed around the import
    alone; at --rows and at a tenth of it, so the peak RSS shows whether memory stays
    flat in the file's size (the CSV must be streamed);
(b) naive: what a short script does, on a sample (--naive-sample): per CSV row one
    INSERT through SQLAlchemy, committed alone; no validation, no consent events;
(c) the database's pace: the same rows in one `executemany` (SQLAlchemy Core, one
    transaction), again with no validation and no events: the ceiling.

What (a) runs: pipeline.subscribers.imports (IMP-1..5): batches of 1,000 rows, each
in its own transaction with a fixed number of statements (pipeline.store.bulk), two
consent events per row included.

PostgreSQL: --pg-url (default the test server, postgres@127.0.0.1:5432/test); every
run uses a fresh schema, dropped at the end.

Prints rows/s for (a), (b), (c), ours / naive, ours / ceiling, and peak RSS (targets:
>= 10,000 rows/s on SQLite, >= 5,000 on PostgreSQL, RSS flat in file size).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPICS = ["sleep", "work", "relationships", "technology", "mental-health", "habits"]
FREQUENCIES = ["daily", "weekly", "instant"]


def write_csv(path: Path, rows: int) -> None:
    """Realistic rows: names with non-ASCII letters, mixed frequencies, topics, zones."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["email", "name", "frequency", "topics", "timezone"])
        for i in range(rows):
            topics = ";".join(TOPICS[j % len(TOPICS)] for j in range(i % 3))
            out.writerow(
                [
                    f"reader{i}@example.org",
                    f"Reader Çelik {i}",
                    FREQUENCIES[i % 3],
                    topics,
                    "Europe/Lisbon" if i % 2 else "UTC",
                ]
            )


def config_for(root: Path, db_url: str) -> Path:
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
url = "{db_url}"
""")
    return config


# --- (a) ours, in a child process -------------------------------------------------------------


def run_ours(args) -> dict:
    from pipeline.cli import main as cli

    config = Path(args.config)
    os.environ["SYNDICATE_SECRET_KEY"] = "bench-" + "k" * 40
    cli.main(["--config", str(config), "init"], standalone_mode=False)
    t0 = time.perf_counter()
    cli.main(
        ["--config", str(config), "subscribers", "import", args.csv, "--confirmed", "--source", "bench"],
        standalone_mode=False,
    )
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space exec made, whereas
    getrusage's ru_maxrss carries the parent's peak over fork + exec on Linux (the parent
    holds the ceiling run's rows by the time the PostgreSQL child starts)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(root: Path, db_url: str, csv_path: Path) -> dict:
    config = config_for(root, db_url)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--config", str(config), "--csv", str(csv_path)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- (b) naive and (c) the ceiling --------------------------------------------------------


def _rows(csv_path: Path, limit: int | None = None):
    now = dt.datetime.now(dt.UTC)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for i, r in enumerate(csv.DictReader(fh)):
            if limit is not None and i >= limit:
                return
            yield dict(
                email=r["email"].lower(),
                name=r["name"],
                state="confirmed",
                frequency=r["frequency"],
                topics=[t for t in r["topics"].split(";") if t],
                timezone=r["timezone"],
                source="bench",
                created_at=now,
                updated_at=now,
                confirmed_at=now,
            )


def _fresh_tables(root: Path, db_url: str):
    from pipeline.app import App
    from pipeline.config import load_settings

    os.environ["SYNDICATE_SECRET_KEY"] = "bench-" + "k" * 40
    from pipeline.cli import main as cli

    config = config_for(root, db_url)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # init's report is not the bench's
        cli.main(["--config", str(config), "init"], standalone_mode=False)
    return App(load_settings(config)).engine


def naive(root: Path, db_url: str, csv_path: Path, sample: int) -> float:
    from sqlalchemy import insert

    from pipeline.store.schema import subscribers

    engine = _fresh_tables(root, db_url)
    t0 = time.perf_counter()
    n = 0
    for row in _rows(csv_path, sample):
        with engine.begin() as conn:
            conn.execute(insert(subscribers).values(**row))
        n += 1
    rate = n / (time.perf_counter() - t0)
    engine.dispose()
    return rate


def ceiling(root: Path, db_url: str, csv_path: Path) -> float:
    from sqlalchemy import insert

    from pipeline.store.schema import subscribers

    engine = _fresh_tables(root, db_url)
    t0 = time.perf_counter()
    rows = list(_rows(csv_path))
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(subscribers), rows[i : i + 5000])
    rate = len(rows) / (time.perf_counter() - t0)
    engine.dispose()
    return rate


# --- databases ----------------------------------------------------------------------------


class Postgres:
    """Fresh schemas on the server at `url`, dropped at the end."""

    def __init__(self, url: str):
        self.url = url
        self.schemas: list[str] = []

    def _dsn(self) -> str:
        return self.url.replace("postgresql+psycopg", "postgresql")

    def new(self) -> str:
        import psycopg

        name = "bench_import_" + secrets.token_hex(4)
        with psycopg.connect(self._dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        return f"{self.url}?options=-csearch_path%3D{name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--naive-sample", type=int, default=2_000)
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument(
        "--pg-url", default=os.environ.get("SYNDICATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_ours(args)))
        return

    small = max(1, args.rows // 10)
    print("load average before the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"subscribers import: CSV of {args.rows:,} rows (and {small:,} for the RSS check); {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp_path = Path(tmp)
        big, little = tmp_path / "big.csv", tmp_path / "small.csv"
        write_csv(big, args.rows)
        write_csv(little, small)
        pg = Postgres(args.pg_url)
        try:
            for db in [d.strip() for d in args.databases.split(",") if d.strip()]:

                def url(tag: str, db=db) -> str:
                    if db == "sqlite":
                        (tmp_path / tag / "var").mkdir(parents=True, exist_ok=True)
                        return f"sqlite:///{tmp_path / tag / 'var' / 'syndicate.db'}"
                    return pg.new()

                def root(tag: str) -> Path:
                    (tmp_path / tag).mkdir(parents=True, exist_ok=True)
                    return tmp_path / tag

                a_small = ours(root(f"{db}-small"), url(f"{db}-small"), little)
                a = ours(root(f"{db}-big"), url(f"{db}-big"), big)
                b = naive(root(f"{db}-naive"), url(f"{db}-naive"), big, args.naive_sample)
                c = ceiling(root(f"{db}-ceiling"), url(f"{db}-ceiling"), big)
                target = 10_000 if db == "sqlite" else 5_000
                rate = args.rows / a["seconds"]
                print(f"[{db}]")
                print(
                    f"(a) ours:    {rate:9,.0f} rows/s  ({args.rows:,} rows in {a['seconds']:.1f} s; "
                    f"{small:,} rows: {small / a_small['seconds']:,.0f} rows/s)   (target >= {target:,}: "
                    f"{'met' if rate >= target else 'NOT met'})"
                )
                print(f"(b) naive:   {b:9,.0f} rows/s  (one INSERT + commit per row; sample of {args.naive_sample:,})")
                print(f"(c) ceiling: {c:9,.0f} rows/s  (executemany, one transaction, no checks, no events)")
                print(f"ours / naive: {rate / b:5.1f}x   ours / ceiling: {rate / c:4.2f}")
                print(
                    f"peak RSS: {a['rss_mb']:.0f} MB at {args.rows:,} rows, {a_small['rss_mb']:.0f} MB at "
                    f"{small:,}   (target: flat in file size)"
                )
        finally:
            if pg.schemas:
                pg.drop()
    print("load average after the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
