"""Benchmark: compose a weekly digest of 20 articles for 100,000 subscribers (SQLite).

    .venv/bin/python bench/compose.py                 # 100,000 and 200,000 subscribers
    .venv/bin/python bench/compose.py --sizes 20000   # quicker

Each step runs in its own process so that its peak RSS (ru_maxrss) is its own:

1. setup: a project in a temporary folder, 20 approved articles over the week, N weekly
   subscribers inserted straight into the table, with mixed topics (40 % everything,
   the rest 1-3 of 8 topics) and mixed watermarks (10 % joined during the week);
2. naive (first size only): the baseline in the same run, on a sample of subscribers:
   per subscriber select the articles, render the full Jinja2 templates (HTML + text)
   and build an `EmailMessage`, queue it in the outbox; rolled back at the end. It
   prepares each article's data once and skips CSS inlining (which would only make it
   slower), so the ratio is a lower bound;
3. compose: `pipeline.digests.editions.compose` for every subscriber: selection, one render per
   distinct selection, one outbox row per subscriber, watermarks, in batched
   transactions.

Prints subscribers/s for both, the ratio (target >= 10x), and peak RSS per size (target
< 250 MB and flat from 100,000 to 200,000).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPICS = ["sleep", "work", "privacy", "relationships", "habits", "technology", "wellbeing", "remote-work"]
WEEK = dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)  # a Monday
NOW = WEEK + dt.timedelta(days=7, hours=1)
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="630" viewBox="0 0 1200 630">'
    '<rect width="1200" height="630" fill="#123"/></svg>'
)
BODY = ("A paragraph about the topic with enough words to look like an article. " * 12 + "\n\n") * 6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def project(root: Path):
    from pipeline.app import App
    from pipeline.config import load_settings

    return App(load_settings(root / "syndicate.toml", env={}))


def setup(root: Path, n: int) -> None:
    from sqlalchemy import insert, update

    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest
    from pipeline.store.schema import articles, subscribers

    (root / "content" / "articles").mkdir(parents=True)
    (root / "content" / "authors").mkdir(parents=True)
    (root / "content" / "images").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "secret_key").write_text("bench-secret-" + "x" * 40)
    (root / "content" / "images" / "pic.svg").write_text(SVG)
    (root / "content" / "authors" / "ana.md").write_text("---\nname: Ana Lee\n---\nAna writes.\n")
    (root / "syndicate.toml").write_text(f"""
[site]
title = "Bench Journal"
base_url = "https://news.example.com"
postal_address = "1 Example Street, Springfield 12345, USA"
from_address = "Bench Journal <digest@news.example.com>"
transactional_from = "Bench Journal <hello@news.example.com>"
[paths]
templates = "{REPO / "templates"}"
[database]
url = "sqlite:///var/bench.db"
[digests]
max_articles = 20
batch_size = 1000
""")
    rng = random.Random(42)
    for i in range(20):
        tags = rng.sample(TOPICS, 2)
        image = 'image: images/pic.svg\nimage_alt: "A dark square"\n' if i % 4 == 0 else ""
        (root / "content" / "articles" / f"article-{i:02d}.md").write_text(
            f'---\ntitle: "Article number {i}: notes on {tags[0]}"\nauthor: ana\n'
            f"date: {(WEEK + dt.timedelta(hours=8 * i)).isoformat()}\ntags: [{', '.join(tags)}]\n"
            f"category: {tags[0]}\nstatus: submitted\n{image}---\n{BODY}"
        )
    app = project(root)
    ingest(app)
    with app.engine.begin() as conn:
        approve(conn, all_pending=True, editor="bench")
        for i in range(20):
            conn.execute(
                update(articles)
                .where(articles.c.slug == f"article-{i:02d}")
                .values(first_approved_at=WEEK + dt.timedelta(hours=8 * i))
            )
    batch = []
    with app.engine.begin() as conn:
        for k in range(n):
            r = rng.random()
            topics = [] if r < 0.4 else rng.sample(TOPICS, rng.randint(1, 3))
            joined = rng.random() < 0.1
            confirmed = WEEK + dt.timedelta(hours=rng.randint(1, 150)) if joined else WEEK - dt.timedelta(days=30)
            batch.append(
                dict(
                    email=f"reader{k}@example.com",
                    name=f"Reader {k}",
                    state="confirmed",
                    frequency="weekly",
                    topics=topics,
                    timezone="UTC",
                    source="bench",
                    created_at=confirmed,
                    updated_at=confirmed,
                    confirmed_at=confirmed,
                    last_digest_at=None if joined else WEEK,
                )
            )
            if len(batch) == 5000:
                conn.execute(insert(subscribers), batch)
                batch = []
        if batch:
            conn.execute(insert(subscribers), batch)


def naive(root: Path, sample: int) -> dict:
    """The baseline: everything per subscriber."""
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import format_datetime, make_msgid

    from sqlalchemy import select

    from pipeline.content.editorial import approved_articles
    from pipeline.delivery import outbox
    from pipeline.digests import render
    from pipeline.digests.editions import article_view, edition_label
    from pipeline.store.schema import subscribers
    from pipeline.subscribers.links import preferences_url, unsubscribe_url

    app = project(root)
    settings = app.settings
    site = render.site_for_email(settings)
    html_env, text_env = render.envs(settings)
    started = time.perf_counter()
    with app.engine.connect() as conn:
        trans = conn.begin()
        candidates = approved_articles(conn, settings, approved_until=NOW)
        subs = conn.execute(select(subscribers).order_by(subscribers.c.id).limit(sample)).mappings().all()
        views_by_id: dict = {}  # article data prepared once: only the rendering is per subscriber
        for sub in subs:
            wm = sub["last_digest_at"] or sub["confirmed_at"]
            wanted = set(sub["topics"] or [])
            chosen = [
                a for a in candidates if a.approved_at > wm and (not wanted or wanted & (set(a.tags) | {a.category}))
            ]
            if not chosen:
                continue
            views = [
                views_by_id.get(a.article_id) or views_by_id.setdefault(a.article_id, article_view(settings, site, a))
                for a in chosen[:20]
            ]
            ctx = {
                "site": site,
                "edition": {
                    "key": "weekly",
                    "frequency": "weekly",
                    "web_url": site.base_url,
                    "label": edition_label(settings, "weekly", NOW),
                },
                "articles": views,
                "more_count": 0,
                "more_url": site.base_url,
                "preheader": views[0]["title"],
                "web_url": site.base_url,
                "footer_reason": "You subscribed.",
                "name": sub["name"],
                "unsubscribe_url": unsubscribe_url(settings, sub["id"]),
                "preferences_url": preferences_url(settings, sub["id"]),
            }
            msg = EmailMessage(policy=SMTP)
            msg["From"] = site.from_address
            msg["To"] = sub["email"]
            msg["Subject"] = text_env.get_template("email/digest_subject.txt").render(**ctx).strip()
            msg["Date"] = format_datetime(NOW)
            msg["Message-ID"] = make_msgid(domain=site.from_domain)
            msg["List-Id"] = site.list_id_header
            msg["List-Unsubscribe"] = f"<{ctx['unsubscribe_url']}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            msg.set_content(text_env.get_template("email/digest.txt").render(**ctx))
            msg.add_alternative(html_env.get_template("email/digest.html").render(**ctx), subtype="html")
            data = msg.as_bytes()
            outbox.enqueue(
                conn,
                channel="email",
                target=sub["email"],
                kind="naive",
                key=f"naive:{sub['id']}",
                payload={"message": data.decode("ascii", "replace")},
                subscriber_id=sub["id"],
            )
        trans.rollback()
    seconds = time.perf_counter() - started
    return {"subscribers": len(subs), "seconds": seconds, "rss_mb": peak_rss_mb()}


def compose(root: Path) -> dict:
    from pipeline.digests import editions as digests

    app = project(root)
    started = time.perf_counter()
    report = digests.compose(app.engine, app.settings, "weekly", now=NOW)
    seconds = time.perf_counter() - started
    return {
        "subscribers": report.subscribers,
        "queued": report.queued,
        "rendered": report.parts_rendered,
        "seconds": seconds,
        "rss_mb": peak_rss_mb(),
    }


def step(kind: str, root: Path, n: int = 0) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--step", kind, "--root", str(root), "--n", str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,200000")
    ap.add_argument("--naive-sample", type=int, default=3000)
    ap.add_argument("--step")
    ap.add_argument("--root")
    ap.add_argument("--n", type=int, default=0)
    args = ap.parse_args()
    if args.step:
        root = Path(args.root)
        if args.step == "setup":
            setup(root, args.n)
            print(json.dumps({"ok": True}))
        elif args.step == "naive":
            print(json.dumps(naive(root, args.n)))
        else:
            print(json.dumps(compose(root)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"compose bench: weekly digest, 20 articles, SQLite, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    baseline = None
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="syndicate-bench-") as tmp:
            root = Path(tmp)
            step("setup", root, n)
            if baseline is None:
                baseline = step("naive", root, min(args.naive_sample, n))
                rate = baseline["subscribers"] / baseline["seconds"]
                print(
                    f"naive baseline (Jinja2 render + EmailMessage per subscriber, sample of "
                    f"{baseline['subscribers']:,}): {rate:,.0f} subscribers/s, peak RSS {baseline['rss_mb']:.0f} MB"
                )
            r = step("compose", root, n)
            r["rate"] = r["subscribers"] / r["seconds"]
            results.append((n, r))
            print(
                f"compose {n:,} subscribers: {r['seconds']:.1f} s, {r['rate']:,.0f} subscribers/s, "
                f"{r['queued']:,} queued, {r['rendered']} variants rendered, peak RSS {r['rss_mb']:.0f} MB"
            )
    base_rate = baseline["subscribers"] / baseline["seconds"]
    n0, r0 = results[0]
    print(f"ratio vs naive at {n0:,}: {r0['rate'] / base_rate:.1f}x (target >= 10x)")
    print(f"peak RSS at {n0:,}: {r0['rss_mb']:.0f} MB (target < 250 MB)")
    if len(results) > 1:
        n1, r1 = results[-1]
        print(
            f"peak RSS {n0:,} -> {n1:,}: {r0['rss_mb']:.0f} MB -> {r1['rss_mb']:.0f} MB "
            f"({(r1['rss_mb'] / r0['rss_mb'] - 1) * 100:+.0f} %; flat means memory does not grow with the list)"
        )


if __name__ == "__main__":
    main()
