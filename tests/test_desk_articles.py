"""Authors and editors in the desk, through the ASGI client, on every database:
write with an image, policy flags before submitting, submit as ingest does, review with
a diff of every field and three previews, reject with a reason, resubmit, approve
pinned to the hash, two editors at once, retract, history; and the abuse cases."""

from __future__ import annotations

import io
import re
import threading

import pytest
from PIL import Image
from sqlalchemy import select

from pipeline.content import desk, editorial
from pipeline.content.editorial import approved_articles
from pipeline.content.ingest import ingest
from pipeline.errors import EditorialError
from pipeline.store.schema import articles, revisions

from .articles import write_article, write_author
from .desk_kit import csrf_of, make_user, signed_in

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
POLITICAL = "Our **new** habit: talk about the election over dinner.\n\nIt helps.\n"
CALM = "Our **new** habit: talk about the garden over dinner.\n\nIt helps.\n"


def png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def form(client, path: str, **fields):
    data = {
        "csrf_token": csrf_of(client.get(path if not path.endswith("/new") else path).text),
        "title": "Dinner Talk",
        "summary": "",
        "tags": "habits, home",
        "category": "home",
        "body": CALM,
        "image_alt": "",
        "action": "save",
    }
    data.update(fields)
    return data


@pytest.fixture
def people(app):
    author = make_user(app, "ann@example.com", ["author"], name="Ann Author")
    other = make_user(app, "bob@example.com", ["author"], name="Bob Writer")
    editor = make_user(app, "ed@example.com", ["editor"])
    return app, author, other, editor


def write(
    client, title="Dinner Talk", body=POLITICAL, image: bytes | None = None, alt="A table set for two", action="submit"
):
    data = form(client, "/desk/articles/new", title=title, body=body, image_alt=alt if image else "", action=action)
    files = {"image_file": ("table.png", image, "image/png")} if image else None
    return client.post("/desk/articles/new", data=data, files=files)


def test_author_writes_with_image_sees_rules_and_submits_like_ingest(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    page = ann.get("/desk/articles/new")
    assert "statements involving politics will not be approved" in page.text.lower()
    # preview first: the rule is shown before submitting
    r = write(ann, image=png(), action="preview")
    assert r.status_code == 200 and 'id="preview"' in r.text
    assert "This mentions ‘election’" in r.text
    desk_id = int(re.search(r'action="/desk/articles/(\d+)"', r.text).group(1))
    data = form(ann, f"/desk/articles/{desk_id}", body=POLITICAL, image_alt="A table set for two", action="preview")
    r = ann.post(f"/desk/articles/{desk_id}", data=data)
    assert r.status_code == 200 and 'id="preview"' in r.text and "<strong>new</strong>" in r.text
    data["action"] = "submit"
    r = ann.post(f"/desk/articles/{desk_id}", data=data)
    assert r.status_code == 303
    with app.engine.connect() as conn:
        art = conn.execute(select(articles).where(articles.c.slug == "dinner-talk")).one()
        rev = conn.execute(select(revisions).where(revisions.c.id == art.current_revision_id)).one()
        queue = editorial.review_queue(conn)
    assert art.source_path == f"desk:{desk_id}"
    assert rev.state == "submitted" and rev.author_slug == "ann-author"
    assert [f["rule"] for f in rev.flags] == ["no-politics"]
    assert rev.image.startswith("https://news.example.com/images/desk/") and rev.image_alt == "A table set for two"
    assert rev.image_type == "image/png" and rev.image_length == len(png())
    assert [p.slug for p in queue] == ["dinner-talk"]
    # the uploaded image is served to signed-in users for previews
    name = rev.image.rsplit("/", 1)[1]
    assert ann.get(f"/desk/media/{name}").content == png()
    # ingest leaves desk articles alone (no file is not a deletion)
    ingest(app)
    with app.engine.connect() as conn:
        assert conn.execute(select(articles.c.retracted_at).where(articles.c.slug == "dinner-talk")).scalar() is None
    # submitting an unchanged copy adds no revision
    r = ann.post(f"/desk/articles/{desk_id}", data=data)
    assert "Nothing%20changed" in r.headers["location"]


def test_reject_needs_a_reason_then_author_sees_it_resubmits_and_editor_approves(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    r = write(ann)
    desk_id = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    ed = signed_in(app, "ed@example.com")
    queue = ed.get("/desk/review")
    assert "no-politics" in queue.text and "Dinner Talk" in queue.text and "desk" in queue.text
    page = ed.get("/desk/review/dinner-talk")
    assert page.status_code == 200 and "election" in page.text
    for kind, marker in (("page", "<h1"), ("digest", "Read the article"), ("feed", "&lt;entry")):
        p = ed.get(f"/desk/review/dinner-talk/{kind}")
        assert p.status_code == 200 and marker in p.text and "Dinner Talk" in p.text, kind
    with app.engine.connect() as conn:
        rev = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    token = csrf_of(page.text)
    r = ed.post("/desk/review/dinner-talk/reject", data={"csrf_token": token, "revision_id": rev.id, "reason": "   "})
    assert r.status_code == 409 and "needs a reason" in r.text.lower()
    r = ed.post(
        "/desk/review/dinner-talk/approve",
        data={"csrf_token": token, "revision_id": rev.id, "content_hash": rev.content_hash},
    )
    assert r.status_code == 409 and "flagged" in r.text.lower(), "a flag blocks approval without an override"
    r = ed.post(
        "/desk/review/dinner-talk/reject",
        data={"csrf_token": token, "revision_id": rev.id, "reason": "Please leave the election out."},
    )
    assert r.status_code == 303
    mine = ann.get("/desk/articles")
    assert "rejected" in mine.text and "Please leave the election out." in mine.text
    data = form(ann, f"/desk/articles/{desk_id}", body=CALM, action="submit")
    assert ann.post(f"/desk/articles/{desk_id}", data=data).status_code == 303
    page = ed.get("/desk/review/dinner-talk")
    assert "garden" in page.text
    with app.engine.connect() as conn:
        rev2 = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    assert rev2.flags == []
    r = ed.post(
        "/desk/review/dinner-talk/approve",
        data={
            "csrf_token": csrf_of(page.text),
            "revision_id": rev2.id,
            "content_hash": rev2.content_hash,
            "note": "lovely",
        },
    )
    assert r.status_code == 303
    with app.engine.connect() as conn:
        live = approved_articles(conn, app.settings)
    assert [(a.slug, a.author_name) for a in live] == [("dinner-talk", "Ann Author")]
    assert "approved" in ann.get("/desk/articles").text
    history = ed.get("/desk/review/dinner-talk/history").text
    for what in ("revision", "rejected", "approved", "ed@example.com", "Please leave the election out."):
        assert what in history


def test_edit_of_a_published_article_is_diffed_field_by_field(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    r = write(ann, body=CALM)
    desk_id = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    with app.engine.begin() as conn:
        editorial.approve(conn, ["dinner-talk"], editor="ed@example.com")
    data = form(
        ann,
        f"/desk/articles/{desk_id}",
        title="Dinner Talk, Again",
        category="family",
        tags="habits",
        body=CALM + "\nOne more line.\n",
        action="submit",
    )
    assert ann.post(f"/desk/articles/{desk_id}", data=data).status_code == 303
    with app.engine.connect() as conn:
        art = conn.execute(select(articles).where(articles.c.slug == "dinner-talk")).one()
        diff = {d["field"]: d for d in editorial.field_diff(conn, art.current_revision_id, art.approved_revision_id)}
    assert diff["title"]["changed"] and diff["title"]["old"] == "Dinner Talk"
    assert diff["category"]["changed"] and diff["category"]["new"] == "family"
    assert diff["tags"]["old"] == "habits, home" and diff["tags"]["new"] == "habits"
    assert not diff["summary"]["changed"] and not diff["image"]["changed"]
    assert "+One more line." in diff["body_markdown"]["diff"]
    page = signed_in(app, "ed@example.com").get("/desk/review/dinner-talk")
    assert "Dinner Talk, Again" in page.text and "+One more line." in page.text


def test_an_author_sees_and_edits_only_their_own(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    r = write(ann, action="save")
    desk_id = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    bob = signed_in(app, "bob@example.com")
    assert bob.get(f"/desk/articles/{desk_id}").status_code == 404
    r = bob.post(f"/desk/articles/{desk_id}", data=form(bob, "/desk/articles/new", title="Mine now"))
    assert r.status_code == 404
    assert "Dinner Talk" not in bob.get("/desk/articles").text
    with app.engine.connect() as conn:
        assert desk.get(conn, desk_id)["title"] == "Dinner Talk"


def test_bad_input_gets_a_clear_answer_and_nothing_is_lost(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    r = write(ann, title="x" * 2000, action="save")
    assert r.status_code == 400 and "2,000 characters" in r.text
    assert "x" * 2000 in r.text, "what the author typed is shown again, not lost"
    r = write(ann, image=b"this is not an image at all", action="save")
    assert r.status_code == 400 and "not an image" in r.text.lower()
    r = write(ann, image=png(), alt="", action="save")
    assert r.status_code == 400 and "describe the image" in r.text.lower()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><rect width="5" height="5"/></svg>'
    data = form(ann, "/desk/articles/new", image_alt="a square")
    r = ann.post("/desk/articles/new", data=data, files={"image_file": ("x.svg", svg, "image/svg+xml")})
    assert r.status_code == 400 and "script" in r.text
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="5" height="5"/></svg>'
    r = ann.post("/desk/articles/new", data=data, files={"image_file": ("x.svg", svg, "image/svg+xml")})
    assert r.status_code == 400
    plain = b'<svg xmlns="http://www.w3.org/2000/svg" width="5" height="5"><rect width="5" height="5"/></svg>'
    r = ann.post("/desk/articles/new", data=data, files={"image_file": ("x.svg", plain, "image/svg+xml")})
    assert r.status_code == 303
    big = b"\x89PNG" + b"\0" * (20 * 1024 * 1024)
    r = ann.post("/desk/articles/new", data=data, files={"image_file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "larger than" in r.text.lower()
    with app.engine.connect() as conn:
        assert len(desk.list_owned(conn, author.id)) == 1


def test_approval_is_pinned_to_the_hash_the_editor_saw(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    r = write(ann, body=CALM)
    desk_id = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    ed = signed_in(app, "ed@example.com")
    page = ed.get("/desk/review/dinner-talk")
    with app.engine.connect() as conn:
        seen = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    # the author changes it while the editor reads
    data = form(ann, f"/desk/articles/{desk_id}", body=CALM + "\nA late addition.\n", action="submit")
    assert ann.post(f"/desk/articles/{desk_id}", data=data).status_code == 303
    r = ed.post(
        "/desk/review/dinner-talk/approve",
        data={"csrf_token": csrf_of(page.text), "revision_id": seen.id, "content_hash": seen.content_hash},
    )
    assert r.status_code == 409 and "no longer waiting" in r.text.lower()
    with app.engine.connect() as conn:
        assert approved_articles(conn, app.settings) == []


def test_two_editors_approving_at_once_one_wins_the_other_is_told(people):
    app, author, other, editor = people
    make_user(app, "eve@example.com", ["editor"])
    ann = signed_in(app, "ann@example.com")
    write(ann, body=CALM)
    with app.engine.connect() as conn:
        rev = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    barrier = threading.Barrier(2)
    outcomes = {}

    def decide(who):
        try:
            barrier.wait()  # before BEGIN: SQLite's BEGIN IMMEDIATE already serialises writers
            with app.engine.begin() as conn:
                editorial.claim_for_decision(conn, "dinner-talk", rev.id)
                editorial.approve(conn, ["dinner-talk"], editor=who, expected_hash=rev.content_hash)
            outcomes[who] = "approved"
        except EditorialError as exc:
            outcomes[who] = exc.message
        except Exception as exc:  # SQLite: the loser may be told the database is busy
            outcomes[who] = f"busy: {type(exc).__name__}"

    threads = [threading.Thread(target=decide, args=(w,)) for w in ("ed@example.com", "eve@example.com")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(v == "approved" for v in outcomes.values()) == [False, True], outcomes
    loser = next(v for v in outcomes.values() if v != "approved")
    assert "no longer waiting" in loser or loser.startswith("busy"), loser
    with app.engine.connect() as conn:
        assert len(editorial.history(conn, "dinner-talk")) == 1


def test_retract_takes_an_article_off_and_file_articles_are_reviewed_too(people):
    app, author, other, editor = people
    write_author(app.settings.root)
    write_article(app.settings.root, "rituals")
    ingest(app)
    ed = signed_in(app, "ed@example.com")
    assert "Small Rituals" in ed.get("/desk/review").text
    page = ed.get("/desk/review/rituals")
    with app.engine.connect() as conn:
        rev = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    r = ed.post(
        "/desk/review/rituals/approve",
        data={"csrf_token": csrf_of(page.text), "revision_id": rev.id, "content_hash": rev.content_hash},
    )
    assert r.status_code == 303
    page = ed.get("/desk/review/rituals")
    r = ed.post("/desk/review/rituals/retract", data={"csrf_token": csrf_of(page.text), "reason": ""})
    assert r.status_code == 409 and "needs a reason" in r.text.lower()
    r = ed.post("/desk/review/rituals/retract", data={"csrf_token": csrf_of(page.text), "reason": "Outdated advice"})
    assert r.status_code == 303
    with app.engine.connect() as conn:
        assert approved_articles(conn, app.settings) == []
        assert [e["what"] for e in editorial.timeline(conn, "rituals")] == ["revision", "approved", "retracted"]
    ingest(app)  # the unchanged file does not bring a retracted article back
    with app.engine.connect() as conn:
        assert approved_articles(conn, app.settings) == []


def test_export_articles_writes_markdown_that_ingest_reads(people, tmp_path):
    from pipeline.content.ingest import read_article

    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    write(ann, body=CALM, image=png())
    with app.engine.connect() as conn:
        paths = desk.export(conn, app.settings, tmp_path / "out")
    assert [p.name for p in paths] == ["dinner-talk.md"]
    parsed = read_article(paths[0], app.settings, {"ann-author"})
    assert (parsed.title, parsed.author_slug, parsed.tags, parsed.category) == (
        "Dinner Talk",
        "ann-author",
        ["habits", "home"],
        "home",
    )
    assert parsed.image_alt == "A table set for two" and parsed.image_type == "image/png"


def test_override_a_flag_needs_a_reason_and_is_in_the_history(people):
    app, author, other, editor = people
    ann = signed_in(app, "ann@example.com")
    write(ann)  # mentions the election: flagged
    ed = signed_in(app, "ed@example.com")
    page = ed.get("/desk/review/dinner-talk")
    assert 'id="approve-override"' in page.text
    with app.engine.connect() as conn:
        rev = conn.execute(select(revisions).where(revisions.c.state == "submitted")).one()
    data = {"csrf_token": csrf_of(page.text), "revision_id": rev.id, "content_hash": rev.content_hash, "override": "  "}
    assert ed.post("/desk/review/dinner-talk/approve", data=data).status_code == 409
    data["override"] = "Reports a school council vote, not a political statement"
    assert ed.post("/desk/review/dinner-talk/approve", data=data).status_code == 303
    history = ed.get("/desk/review/dinner-talk/history").text
    assert "override" in history and "school council vote" in history
