"""Authors: their articles, the editor (Markdown, image with alt text), preview, submit.

Every view loads the article through `desk.get_owned`, so an author reaches only their
own; another author's id answers 404 like an id that does not exist.
"""

from __future__ import annotations

import mimetypes

from markupsafe import Markup
from starlette.responses import Response

from pipeline import accounts
from pipeline.content import desk
from pipeline.errors import NotFound

from .core import HEADERS, Ctx, db, read


def _author_slug(conn, c: Ctx) -> str:
    return accounts.ensure_author(conn, c.user.id)


def articles_list(c: Ctx) -> Response:
    with read(c) as conn:
        rows = desk.list_owned(conn, c.user.id)
    return c.page("articles.html", rows=rows)


def article_new_form(c: Ctx) -> Response:
    empty = {"title": "", "summary": "", "tags": [], "category": "", "body_markdown": "", "image": "", "image_alt": ""}
    return c.page(
        "edit.html",
        row=empty,
        article=None,
        error=None,
        preview=None,
        flags=None,
        rules=c.settings.policy_rules,
        progress=None,
    )


def _form_values(c: Ctx) -> dict:
    return {
        "title": c.text("title", 5000),
        "summary": c.text("summary", 5000),
        "tags": c.text("tags", 2000),
        "category": c.text("category", 200),
        "body": c.text("body", 2_000_000),
        "image_alt": c.text("image_alt", 1000),
    }


def _shown(values: dict, image: str) -> dict:
    return {
        "title": values["title"],
        "summary": values["summary"],
        "tags": [t.strip() for t in values["tags"].split(",") if t.strip()],
        "category": values["category"],
        "body_markdown": values["body"],
        "image": image,
        "image_alt": values["image_alt"],
    }


def article_create(c: Ctx) -> Response:
    return _save(c, None)


def article_edit_form(c: Ctx) -> Response:
    with read(c) as conn:
        row = desk.get_owned(conn, _id(c), c.user.id)
        state = desk.status(conn, row)
    flags = desk.flags_for(c.settings, desk.draft_of(row), row["slug"])
    return c.page(
        "edit.html",
        row=row,
        article=row,
        error=None,
        preview=None,
        flags=flags,
        rules=c.settings.policy_rules,
        progress=state,
    )


def article_update(c: Ctx) -> Response:
    return _save(c, _id(c))


def _id(c: Ctx) -> int:
    raw = c.params["article_id"]
    if not raw.isdigit():
        raise NotFound("no such article of yours")
    return int(raw)


def _save(c: Ctx, desk_id: int | None) -> Response:
    """Save (and, with action=preview or submit, preview or submit) the form."""
    values = _form_values(c)
    action = c.text("action", 20) or "save"
    with db(c) as conn:
        row = desk.get_owned(conn, desk_id, c.user.id) if desk_id is not None else None
        image = row["image"] if row else ""
        if c.text("remove_image", 10):
            image = ""
        upload = c.file("image_file")
        try:
            if upload is not None:
                image = desk.store_image(c.settings, upload.file.read(), upload.filename or "")
            draft = desk.clean_draft(c.settings, values, image=image)
        except desk.DeskInputError as exc:
            return c.page(
                "edit.html",
                413 if "limit is" in exc.message and exc.field == "image" else 400,
                row=_shown(values, image),
                article=row,
                error=exc,
                preview=None,
                flags=None,
                rules=c.settings.policy_rules,
                progress=desk.status(conn, row) if row else None,
            )
        if row is None:
            desk_id = desk.create(conn, c.user.id, draft)
            c.audit(conn, "article.create", f"desk:{desk_id}", title=draft.title)
        else:
            desk.save(conn, desk_id, draft)
            c.audit(conn, "article.save", f"desk:{desk_id}")
        row = desk.get(conn, desk_id)
        if action == "submit":
            result = desk.submit(conn, c.settings, desk_id, _author_slug(conn, c))
            c.audit(
                conn,
                "article.submit",
                row["slug"],
                changed=result["changed"],
                flags=[f["rule"] for f in result["flags"]],
            )
            note = "Submitted for review." if result["changed"] else "Nothing changed since you submitted it."
            return c.redirect(f"/articles/{desk_id}", note)
        state = desk.status(conn, row)
    flags = desk.flags_for(c.settings, draft, row["slug"])
    if action == "preview":
        preview = Markup(desk.render_body(c.settings, row["slug"], draft.body_markdown))
        return c.page(
            "edit.html",
            row=row,
            article=row,
            error=None,
            preview=preview,
            flags=flags,
            rules=c.settings.policy_rules,
            progress=state,
        )
    return c.redirect(f"/articles/{desk_id}", "Saved.")


def media(c: Ctx) -> Response:
    """An uploaded image, for the author's and the editor's previews (before the build
    publishes it). SVG is served with a sandbox so it can never run anything."""
    name = c.params["name"]
    if "/" in name or "\\" in name or name.startswith("."):
        raise NotFound("no such image")
    path = c.settings.path("paths.content") / "images" / "desk" / name
    if not path.is_file():
        raise NotFound("no such image")
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {
        **HEADERS,
        "Cache-Control": "private, max-age=3600",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    }
    return Response(path.read_bytes(), media_type=mime, headers=headers)
