"""Benchmark: deliver a ~14 KB digest to 100,000 subscribers into a local SMTP sink.

    .venv/bin/python bench/delivery.py                       # 100,000 messages
    .venv/bin/python bench/delivery.py --messages 1000000 --skip-naive --skip-source
    .venv/bin/python bench/delivery.py --messages 20000      # quicker

The sink is Postfix's `smtp-sink` when installed (Debian package `postfix`; the
Postfix daemon itself need not run), else an aiosmtpd sink (which tops out near
1,000 messages/s, so the ratios are then bounded by the sink). In the same run:

(a) ours: N outbox rows of a `bench-digest` kind, then `drain` in --processes worker
    processes with delivery.smtp_connections connections each (pipelined when the
    sink offers PIPELINING), journal on, outcomes committed per batch, all in SQLite.
    Run in a child process, so its peak RSS (and its workers') is its own.
(b) naive: per message render the full Jinja2 templates (HTML + text), build an
    `EmailMessage`, open a new smtplib connection, send, quit. Measured on a sample
    (--naive-sample) because at its speed 100,000 would take many minutes.
(c) `smtp-source -d` (connections reused) pushing N messages of the same size with
    the same number of sessions: the practical ceiling.

The `bench-digest` messages are hand-assembled MIME (multipart/alternative, text and
HTML quoted-printable, per-recipient To, Message-ID and unsubscribe links in the
List-Unsubscribe header and both bodies): the body is encoded once per edition and
only the per-recipient parts are encoded per message (STANDARDS SMTP-8). This is a
digest-like message built here, not pipeline.digests.editions' output, so the benchmark
measures the delivery engine alone.

(d) real digests (issue 15 item 3): the path a new user runs, in a child process, each
    step through the `syndicate` command: `subscribers import` of a CSV of
    --real-messages rows (--confirmed), `approve --all` of the bundled sample articles,
    `digest compose --frequency daily`, then `deliver --concurrency --processes` over
    SMTP into the same sink. The message is pipeline.digests' own (templates, CSS
    inlined, quoted-printable, per-subscriber links signed); (e) is `smtp-source` with
    the same sessions and that message's size.

With --real-sizes 100000,1000000, (d) and (e) run once per list size, each in a fresh
project, and every `syndicate` step runs in a process of its own: the peak RSS of the
import, compose and deliver processes (and of deliver's worker processes) is printed
per size, then how much each grew from the smallest size to the largest (target:
flat). (e) sends min(largest size, --source-cap) messages: its rate does not depend
on the count.

Prints messages/s for (a)-(e), ours / naive (target >= 10x), ours / smtp-source
(engine: target >= 1/3; real digests: target >= 0.50), and peak RSS (target < 150 MB
per process, flat in the list size).
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARTICLES = [
    {
        "title": f"Article number {i}: a title about habits and work",
        "url": f"https://news.example.com/a/{i}",
        "author": "Ada Writer",
        "summary": ("A summary sentence that says what the article is about. " * 6),
    }
    for i in range(12)
]

# --- the digest-like message, hand-assembled (what `ours` sends) ----------------------

_EDITION: dict = {}


def _qp(text: str) -> bytes:
    return binascii.b2a_qp(text.encode("utf-8")).replace(b"\n", b"\r\n")


def _edition():
    if not _EDITION:
        text = "This week\r\n\r\n" + "\r\n".join(f"{a['title']}\r\n{a['url']}\r\n{a['summary']}\r\n" for a in ARTICLES)
        html = (
            '<html><body><div style="font-family:Georgia,serif;max-width:600px"><h1>This week</h1>'
            + "".join(
                f'<h2><a href="{a["url"]}" style="color:#123">{a["title"]}</a></h2>'
                f'<p style="margin:0 0 16px 0;line-height:1.5">{a["summary"]}</p>'
                f'<p style="color:#666">by {a["author"]}</p>\n'
                for a in ARTICLES
            )
            + "</div>"
        )
        _EDITION["text"] = _qp(text) + b"\r\n"
        _EDITION["html"] = _qp(html) + b"\r\n"
        _EDITION["date"] = format_datetime(
            time.time() and __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
        ).encode()
    return _EDITION


def build_bench_digest(conn, settings, row):
    from pipeline.delivery.email.channel import OutgoingEmail

    e = _edition()
    rid = row["id"]
    to = row["target"].encode()
    unsub = b"https://news.example.com/u/" + binascii.hexlify(rid.to_bytes(8, "big"))
    boundary = b"=_b" + str(rid).encode()
    head = (
        b"From: Journal <digest@news.example.com>\r\nTo: " + to + b"\r\nSubject: This week in the Journal\r\n"
        b"Date: " + e["date"] + b"\r\nMessage-ID: <d1." + str(rid).encode() + b"@news.example.com>\r\n"
        b"List-Id: Journal digest <digest.news.example.com>\r\nList-Unsubscribe: <" + unsub + b">\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n'
    )
    part = (
        b"--" + boundary + b"\r\nContent-Type: text/%s; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    data = b"".join(
        [
            head,
            part % b"plain",
            e["text"],
            b"Unsubscribe: " + unsub + b"\r\n",
            part % b"html",
            e["html"],
            b'<p><a href=3D"' + unsub + b'">Unsubscribe</a></p></body></html>\r\n',
            b"--" + boundary + b"--\r\n",
        ]
    )
    return OutgoingEmail("digest@news.example.com", [row["target"]], data)


def _register():
    from pipeline.delivery import register_email_kind

    register_email_kind("bench-digest", build_bench_digest)


if __name__ != "__main__":  # imported as a plugin by the worker processes
    _register()

# --- the naive baseline ---------------------------------------------------------------

NAIVE_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><div style="font-family:Georgia,serif;max-width:600px"><h1>{{ title }}</h1>
{% for a in articles %}<h2><a href="{{ a.url }}" style="color:#123">{{ a.title }}</a></h2>
<p style="margin:0 0 16px 0;line-height:1.5">{{ a.summary }}</p><p style="color:#666">by {{ a.author }}</p>
{% endfor %}<p><a href="{{ unsubscribe }}">Unsubscribe</a></p></div></body></html>"""
NAIVE_TEXT = """{{ title }}
{% for a in articles %}
{{ a.title }}
{{ a.url }}
{{ a.summary }}
{% endfor %}
Unsubscribe: {{ unsubscribe }}
"""


def naive(host: str, port: int, count: int) -> float:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.DictLoader({"d.html": NAIVE_HTML, "d.txt": NAIVE_TEXT}),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    t0 = time.perf_counter()
    for i in range(count):
        ctx = {"title": "This week", "articles": ARTICLES, "unsubscribe": f"https://news.example.com/u/{i:016x}"}
        html = env.get_template("d.html").render(ctx)
        text = env.get_template("d.txt").render(ctx)
        msg = EmailMessage()
        msg["From"] = "Journal <digest@news.example.com>"
        msg["To"] = f"naive{i}@example.org"
        msg["Subject"] = "This week in the Journal"
        msg["List-Unsubscribe"] = f"<{ctx['unsubscribe']}>"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        with smtplib.SMTP(host, port) as smtp:
            smtp.sendmail("digest@news.example.com", [f"naive{i}@example.org"], msg.as_bytes(policy=SMTP))
    return count / (time.perf_counter() - t0)


# --- sinks --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.controller = None
        exe = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
        if exe:
            self.kind = "postfix smtp-sink"
            cmd = [exe, f"127.0.0.1:{self.port}", "1024"]
            if os.geteuid() == 0:
                cmd[1:1] = ["-u", "nobody"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        else:
            from aiosmtpd.controller import Controller

            class Discard:
                async def handle_DATA(self, server, session, envelope):
                    return "250 OK"

            self.kind = "aiosmtpd sink (smtp-sink not installed)"
            self.controller = Controller(Discard(), hostname="127.0.0.1", port=self.port)
            self.controller.start()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
        if self.controller:
            self.controller.stop()


def smtp_source(port: int, count: int, sessions: int, size: int) -> float | None:
    exe = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
    if not exe:
        return None
    t0 = time.perf_counter()
    subprocess.run(
        [
            exe,
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            str(size),
            "-f",
            "digest@news.example.com",
            "-t",
            "reader@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return count / (time.perf_counter() - t0)


# --- ours, in a child process -------------------------------------------------------------


def run_ours(args) -> dict:
    """Child: set up the project, enqueue, drain; print a JSON line."""
    from pipeline.app import App
    from pipeline.config import load_settings
    from pipeline.delivery import outbox
    from pipeline.delivery.worker import drain, run_workers

    root = Path(args.root)
    (root / "var").mkdir(parents=True, exist_ok=True)
    (root / "syndicate.toml").write_text(f"""
[site]
base_url = "https://news.example.com"
from_address = "Journal <digest@news.example.com>"
[database]
url = "sqlite:///{root}/var/syndicate.db"
[email]
backend = "smtp"
smtp_host = "127.0.0.1"
smtp_port = {args.port}
smtp_security = "none"
[delivery]
smtp_connections = {args.connections}
messages_per_connection = 1000
batch_size = {args.batch}
""")
    os.environ["SYNDICATE_SECRET_KEY"] = "bench-" + "k" * 40
    os.environ["SYNDICATE_DELIVERY_PLUGINS"] = "delivery"
    settings = load_settings(root / "syndicate.toml")
    app = App(settings)
    _register()
    t0 = time.perf_counter()
    chunk = 10_000
    for start in range(0, args.messages, chunk):
        with app.engine.begin() as conn:
            outbox.enqueue_many(
                conn,
                (
                    dict(
                        channel="email",
                        target=f"reader{i}@example.org",
                        kind="bench-digest",
                        key=f"bench:1:{i}",
                        payload={"edition": 1},
                    )
                    for i in range(start, min(start + chunk, args.messages))
                ),
            )
    enqueue_s = time.perf_counter() - t0
    rss_after_enqueue = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = len(build_bench_digest(None, settings, {"id": 123456, "target": "reader123456@example.org"}).data)
    app.engine.dispose()
    t0 = time.perf_counter()
    if args.processes > 1:
        report = run_workers(settings, processes=args.processes, continuous=False)
    else:
        report = drain(settings, app.engine)
    seconds = time.perf_counter() - t0
    return {
        "sent": report.sent,
        "failed": report.failed + report.retry + report.dead,
        "seconds": seconds,
        "enqueue_seconds": enqueue_s,
        "size": size,
        "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_enqueue_mb": rss_after_enqueue,
        "rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def real_config(root: Path, port: int, connections: int, batch: int) -> Path:
    """The operator's config for the real run: the bundled sample content and
    templates, mail over SMTP to the sink."""
    config = root / "syndicate.toml"
    config.write_text(f"""
[site]
title = "The Community Journal"
base_url = "https://news.example.com"
timezone = "UTC"
postal_address = "The Community Journal, 221 Example Avenue, Springfield, IL 62701, USA"
from_address = "The Community Journal <digest@news.example.com>"
transactional_from = "The Community Journal <hello@news.example.com>"
[paths]
content = "{REPO / "content"}"
templates = "{REPO / "templates"}"
public = "{root / "public"}"
var = "{root / "var"}"
[database]
url = "sqlite:///{root}/var/syndicate.db"
[email]
backend = "smtp"
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_security = "none"
[delivery]
smtp_connections = {connections}
messages_per_connection = 1000
batch_size = {batch}
[digests]
max_articles = 10
""")
    return config


def run_real(args) -> dict:
    """Child: the user's path through `syndicate`, each step timed (see (d) above), each
    in its own process so that each step's peak RSS is its own (`run_step`)."""
    import csv

    root = Path(args.root)
    (root / "var").mkdir(parents=True, exist_ok=True)
    config = real_config(root, args.port, args.connections, args.batch)
    people = root / "subscribers.csv"
    with open(people, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["email", "name", "frequency", "topics", "timezone"])
        out.writerows([f"reader{i}@example.org", f"Reader {i}", "daily", "", "UTC"] for i in range(args.real_messages))
    os.environ["SYNDICATE_SECRET_KEY"] = "bench-" + "k" * 40
    os.environ.pop("SYNDICATE_DELIVERY_PLUGINS", None)
    steps: dict[str, float] = {}
    rss: dict[str, dict] = {}

    def syndicate(step: str, *argv: str) -> None:
        out = subprocess.run(
            [sys.executable, __file__, "--step", str(config), *argv],
            check=True,
            capture_output=True,
            text=True,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        steps[step] = got["seconds"]
        rss[step] = {"self": got["rss_self_mb"], "children": got["rss_children_mb"]}

    syndicate("init", "init")
    syndicate("ingest", "ingest")
    syndicate("import", "subscribers", "import", str(people), "--confirmed", "--source", "bench")
    syndicate("approve", "approve", "--all", "--editor", "bench", "--note", "bench")
    syndicate("compose", "digest", "compose", "--frequency", "daily")
    size = _one_real_message_size(config)
    syndicate("deliver", "deliver", "--concurrency", str(args.processes), "--no-progress")
    sent = _sent(config)
    return {"steps": steps, "sent": sent, "size": size, "rss": rss}


def run_step(config: str, argv: list[str]) -> dict:
    """Grandchild: one `syndicate` command in a process of its own; its time, its peak
    RSS, and the peak RSS of its own children (the deliver worker processes)."""
    from pipeline.cli import main as cli

    t0 = time.perf_counter()
    cli.main(["--config", config, *argv], standalone_mode=False)
    return {
        "seconds": time.perf_counter() - t0,
        "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _one_real_message_size(config: Path) -> int:
    from sqlalchemy import select

    from pipeline.app import App
    from pipeline.config import load_settings
    from pipeline.delivery import email_builder
    from pipeline.store.schema import deliveries

    app = App(load_settings(config))
    with app.engine.connect() as conn:
        row = dict(conn.execute(select(deliveries).where(deliveries.c.kind == "digest").limit(1)).mappings().one())
        size = len(email_builder("digest")(conn, app.settings, row).data)
    app.engine.dispose()
    return size


def _sent(config: Path) -> int:
    from sqlalchemy import func, select

    from pipeline.app import App
    from pipeline.config import load_settings
    from pipeline.store.schema import deliveries

    app = App(load_settings(config))
    with app.engine.connect() as conn:
        sent = conn.execute(
            select(func.count())
            .select_from(deliveries)
            .where(deliveries.c.kind == "digest", deliveries.c.state == "sent")
        ).scalar_one()
    app.engine.dispose()
    return sent


def main() -> None:
    if sys.argv[1:2] == ["--step"]:  # grandchild: one `syndicate` command (run_step)
        print(json.dumps(run_step(sys.argv[2], sys.argv[3:])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=2, help="worker processes (ours)")
    p.add_argument("--connections", type=int, default=2, help="SMTP connections per worker process (ours)")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--naive-sample", type=int, default=2000)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-source", action="store_true")
    p.add_argument(
        "--real-messages",
        type=int,
        default=30_000,
        help="subscribers imported and sent the real daily digest (0: skip (d) and (e))",
    )
    p.add_argument(
        "--real-sizes",
        help="comma-separated list sizes for (d) and (e), one fresh project each, e.g. 100000,1000000: "
        "peak RSS per step at each size, to show it flat in the list size (default: --real-messages)",
    )
    p.add_argument(
        "--source-cap",
        type=int,
        default=100_000,
        help="(e) sends at most this many messages (its rate does not depend on the count)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_real(args) if args.real else run_ours(args)))
        return

    sessions = args.processes * args.connections
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "bench"), str(REPO)]))
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--root",
                    tmp,
                    "--port",
                    str(sink.port),
                    "--messages",
                    str(args.messages),
                    "--processes",
                    str(args.processes),
                    "--connections",
                    str(args.connections),
                    "--batch",
                    str(args.batch),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            ours = json.loads(out.stdout.strip().splitlines()[-1])
        sizes = [int(x) for x in args.real_sizes.split(",")] if args.real_sizes else [args.real_messages]
        reals: list[tuple[int, dict]] = []
        for n in [n for n in sizes if n]:
            with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        "--real",
                        "--root",
                        tmp,
                        "--port",
                        str(sink.port),
                        "--real-messages",
                        str(n),
                        "--processes",
                        str(args.processes),
                        "--connections",
                        str(args.connections),
                        "--batch",
                        str(args.batch),
                    ],
                    env=dict(os.environ, PYTHONPATH=str(REPO)),
                    check=True,
                    capture_output=True,
                    text=True,
                )
                reals.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
        ours_rate = ours["sent"] / ours["seconds"]
        naive_rate = None if args.skip_naive else naive("127.0.0.1", sink.port, args.naive_sample)
        source_rate = None if args.skip_source else smtp_source(sink.port, args.messages, sessions, ours["size"])
        # (e) once per message size (the same at every list size); its rate does not depend on the count
        real_source_rates: dict[int, float | None] = {}
        source_count = min(max([n for n, _ in reals], default=0), args.source_cap)
        for _n, real in reals:
            if not args.skip_source and real["size"] not in real_source_rates:
                real_source_rates[real["size"]] = smtp_source(sink.port, source_count, sessions, real["size"])
    finally:
        sink.stop()

    print(
        f"sink: {sink.kind}; {args.messages:,} messages of {ours['size']:,} bytes; "
        f"{args.processes} processes x {args.connections} connections = {sessions} sessions; {os.cpu_count()} CPUs"
    )
    print(
        f"compose (enqueue {args.messages:,} outbox rows): {ours['enqueue_seconds']:.1f} s "
        f"({args.messages / ours['enqueue_seconds']:,.0f} rows/s)"
    )
    print(
        f"(a) ours:        {ours_rate:8,.0f} messages/s  ({ours['sent']:,} sent, {ours['failed']} not sent, "
        f"{ours['seconds']:.1f} s)"
    )
    if naive_rate:
        print(
            f"(b) naive:       {naive_rate:8,.0f} messages/s  (Jinja2 + EmailMessage + new connection per message; "
            f"sample of {args.naive_sample:,})"
        )
    if source_rate:
        print(f"(c) smtp-source: {source_rate:8,.0f} messages/s  (-d, {sessions} sessions, same size)")
    if naive_rate:
        print(f"ours / naive:       {ours_rate / naive_rate:6.1f}x   (target >= 10x)")
    if source_rate:
        print(f"ours / smtp-source: {ours_rate / source_rate:6.2f}    (target >= 0.33)")
    print(
        f"peak RSS: worker process {ours['rss_workers_mb']:.0f} MB, parent {ours['rss_parent_mb']:.0f} MB "
        f"(after enqueue {ours['rss_after_enqueue_mb']:.0f} MB)   (target < 200 MB)"
    )
    for n, real in reals:
        st, rss = real["steps"], real["rss"]
        real_rate = real["sent"] / st["deliver"]
        real_source_rate = real_source_rates.get(real["size"])
        print(f"real digests (pipeline.digests), {n:,} subscribers, {real['size']:,}-byte messages:")
        print(
            f"  subscribers import: {st['import']:.1f} s ({n / st['import']:,.0f} rows/s); approve --all: "
            f"{st['approve']:.1f} s; digest compose: {st['compose']:.1f} s ({n / st['compose']:,.0f}/s)"
        )
        print(
            f"(d) ours, real digests: {real_rate:8,.0f} messages/s  (deliver --concurrency {args.processes}, "
            f"{real['sent']:,} sent, {st['deliver']:.1f} s)"
        )
        if real_source_rate:
            print(
                f"(e) smtp-source:        {real_source_rate:8,.0f} messages/s  (-d, {sessions} sessions, "
                f"{real['size']:,} bytes, {source_count:,} messages)"
            )
            print(f"real / smtp-source: {real_rate / real_source_rate:6.2f}    (target >= 0.50)")
        if naive_rate:
            print(f"real / naive:       {real_rate / naive_rate:6.1f}x   (target >= 10x)")
        print(
            f"peak RSS, real digests, one process per step: import {rss['import']['self']:.0f} MB, "
            f"compose {rss['compose']['self']:.0f} MB, deliver {rss['deliver']['self']:.0f} MB "
            f"(its worker processes {rss['deliver']['children']:.0f} MB)   (target < 150 MB)"
        )
    if len(reals) > 1:
        (n0, first), (n1, last) = reals[0], reals[-1]
        growth = {
            step: last["rss"][step][k] - first["rss"][step][k]
            for step, k in (("import", "self"), ("compose", "self"), ("deliver", "self"), ("deliver", "children"))
        }
        worst = max(growth.values())
        print(
            f"peak RSS from {n0:,} to {n1:,} subscribers: "
            + ", ".join(
                f"{step} {first['rss'][step][k]:.0f} -> {last['rss'][step][k]:.0f} MB"
                for step, k in (("import", "self"), ("compose", "self"), ("deliver", "children"))
            )
            + f"   (target: flat; largest growth {worst:+.0f} MB)"
        )


if __name__ == "__main__":
    main()
