"""`type = "wordpress"`: a WordPress site through its REST API.

`GET /wp-json/wp/v2/posts?_embed` ordered by modification time, paginated with
`page`/`per_page` until `X-WP-TotalPages`, incremental with `modified_after` (the
cursor's watermark, advanced only past pages that were read). The embedded author,
terms and featured media give the byline, tags, category and image. With a username
and an application password (SYNDICATE_SOURCES__<NAME>__PASSWORD) pending, draft,
private and trashed posts are read too: pending ones wait for an editor here, the others
are retracted. Without credentials a post that leaves the public list is found by a
sweep of the published ids (one conditional GET) and retracted.
"""

from __future__ import annotations

import json
import logging

import requests

from pipeline.config import source_secret
from pipeline.content.sources import http
from pipeline.content.sources.base import Fetched, ItemProblem, Source, SourceError, SourceItem
from pipeline.timeutil import parse_datetime

log = logging.getLogger(__name__)

RETRACTED_STATUSES = {"draft", "private", "trash", "future"}
MAX_PAGES = 500


class WordPressSource(Source):
    type = "wordpress"

    @property
    def api(self) -> str:
        return self.config["url"].rstrip("/") + "/wp-json/wp/v2"

    def _auth(self):
        user = self.config.get("username") or ""
        if not user:
            return None
        password = source_secret(self.config)
        if not password:
            raise SourceError(
                self.name,
                "no-password",
                f"username {user!r} is set but no password",
                hint=f"Set SYNDICATE_SOURCES__{self.name.upper().replace('-', '_')}__PASSWORD to an application password.",
            )
        return requests.auth.HTTPBasicAuth(user, password.replace(" ", ""))

    def fetch(self, cursor: dict) -> Fetched:
        auth = self._auth()
        session = http.make_session(self.config, self.settings.site.base_url)
        new_cursor = dict(cursor)
        out = Fetched(cursor=new_cursor)
        per_page = max(1, min(int(self.config.get("per_page") or 20), 100))
        params = {"_embed": "1", "per_page": str(per_page), "orderby": "modified", "order": "asc"}
        if auth is not None:
            params["status"] = "publish,pending,draft,private,trash"
        if cursor.get("modified_after"):
            params["modified_after"] = cursor["modified_after"]
        limit = int(self.config.get("max_items") or 1000)
        page, total_pages = 1, 1
        watermark = cursor.get("modified_after", "")
        while page <= min(total_pages, MAX_PAGES):
            query = "&".join(f"{k}={v}" for k, v in {**params, "page": str(page)}.items())
            headers = http.conditional_headers({"etag": cursor.get("posts_etag")}) if page == 1 else {}
            try:
                resp = http.get(
                    session,
                    self.config,
                    f"{self.api}/posts?{query}",
                    headers=headers,
                    auth=auth,
                    accept_status=(400,) if page > 1 else (),
                )
            except SourceError as exc:
                if page == 1:
                    raise
                out.error = exc
                break
            out.requests += 1
            if resp.status == 304:
                out.not_modified = True
                break
            if resp.status == 400:  # a page past the end (the list shrank while we read it)
                out.notes.append(f"page {page} is past the end; stopped there")
                break
            posts = _json_list(self.name, resp)
            if page == 1:
                new_cursor["posts_etag"] = resp.header("etag")
            try:
                total_pages = int(resp.header("x-wp-totalpages") or 1)
            except ValueError:
                total_pages = 1
            for post in posts:
                if len(out.items) + len(out.problems) >= limit:
                    out.problems.append(
                        ItemProblem(
                            "(site)", f"more than max_items {limit:,} changed posts: the rest are read next time"
                        )
                    )
                    total_pages = 0
                    break
                try:
                    item = _post_item(post, out, self.config["url"].rstrip("/"))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    out.problems.append(
                        ItemProblem(
                            str(post.get("id", "?")) if isinstance(post, dict) else "?",
                            f"post cannot be read: {type(exc).__name__}: {exc}",
                        )
                    )
                    item = None
                if item is not None:
                    out.items.append(item)
                modified = post.get("modified_gmt") if isinstance(post, dict) else None
                if isinstance(modified, str) and modified > watermark.rstrip("Z"):
                    watermark = modified
            page += 1
        if watermark:
            new_cursor["modified_after"] = watermark.rstrip("Z") + "Z" if not watermark.endswith("Z") else watermark
        if auth is None and out.error is None:
            out.present_keys = self._sweep(session, cursor, new_cursor, out)
        return out

    def _sweep(self, session, cursor: dict, new_cursor: dict, out: Fetched) -> set[str] | None:
        """The ids of every published post, to retract the ones that left (trashed,
        made private or draft upstream). One conditional GET when nothing changed."""
        keys: set[str] = set()
        page, total_pages = 1, 1
        while page <= min(total_pages, MAX_PAGES):
            headers = http.conditional_headers({"etag": cursor.get("sweep_etag")}) if page == 1 else {}
            resp = http.get(
                session, self.config, f"{self.api}/posts?_fields=id&per_page=100&page={page}", headers=headers
            )
            out.requests += 1
            if resp.status == 304:
                return None
            if page == 1:
                new_cursor["sweep_etag"] = resp.header("etag")
            keys.update(str(p["id"]) for p in _json_list(self.name, resp) if isinstance(p, dict) and "id" in p)
            try:
                total_pages = int(resp.header("x-wp-totalpages") or 1)
            except ValueError:
                total_pages = 1
            page += 1
        return keys | {i.key for i in out.items}


def _json_list(name: str, resp: http.Response) -> list:
    ctype = resp.header("content-type").split(";")[0].strip().lower()
    try:
        data = json.loads(resp.body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        what = "HTML" if b"<html" in resp.body[:2000].lower() or ctype == "text/html" else ctype or "not JSON"
        raise SourceError(
            name,
            "not-json",
            f"{resp.url} answered {what} instead of the REST API's JSON",
            hint="Check the url is the WordPress site and its REST API is not blocked (a security plugin, a login wall).",
        ) from None
    if not isinstance(data, list):
        code = data.get("code") if isinstance(data, dict) else ""
        raise SourceError(
            name,
            "not-json",
            f"{resp.url} answered JSON that is not a list of posts{f' ({code})' if code else ''}",
            hint="Check the url is the WordPress site.",
        )
    return data


def _rendered(post: dict, field: str) -> str:
    value = post.get(field)
    if isinstance(value, dict):
        return str(value.get("rendered") or "")
    return str(value or "")


def _gmt(value) -> object:
    if not value:
        return None
    return parse_datetime(str(value).rstrip("Z") + "+00:00")


def _post_item(post: dict, out: Fetched, site: str) -> SourceItem | None:
    key = str(post["id"])
    status = str(post.get("status") or "publish")
    if status in RETRACTED_STATUSES:
        return SourceItem(key=key, title="", body_html="", status="retracted")
    content = post.get("content") or {}
    if isinstance(content, dict) and content.get("protected"):
        raise ValueError("post is password-protected; its content is not public")
    embedded = post.get("_embedded")
    author_name, author_uri = "", ""
    tags, category, image, image_alt = [], "", "", ""
    if not isinstance(embedded, dict):
        out.notes.append(f"post {key}: no _embedded (terms and image unknown; author by id)")
        embedded = {}
    authors = embedded.get("author") or []
    author = authors[0] if authors and isinstance(authors[0], dict) else {}
    if post.get("author"):
        # The user id is the byline's stable identity (names change, embeds go missing).
        author_uri = f"{site}/?author={post['author']}"
    if author.get("name"):
        author_name = str(author["name"])
    elif post.get("author") and embedded:
        out.notes.append(f"post {key}: author {post.get('author')} not found upstream (deleted?)")
        author_name = f"WordPress user {post.get('author')}"
    for group in embedded.get("wp:term") or []:
        for term in group if isinstance(group, list) else []:
            if not isinstance(term, dict):
                continue
            if term.get("taxonomy") == "post_tag" and term.get("name"):
                tags.append(str(term["name"]))
            elif (
                term.get("taxonomy") == "category"
                and term.get("slug")
                and not category
                and term.get("slug") != "uncategorized"
            ):
                category = str(term["slug"])
    media = embedded.get("wp:featuredmedia") or []
    if media and isinstance(media[0], dict) and media[0].get("source_url"):
        image, image_alt = str(media[0]["source_url"]), str(media[0].get("alt_text") or "")
    title = _rendered(post, "title")
    body = _rendered(post, "content")
    if not title.strip() and not body.strip():
        raise ValueError("post has neither a title nor content")
    return SourceItem(
        key=key,
        title=title,
        body_html=body,
        link=str(post.get("link") or ""),
        slug=str(post.get("slug") or ""),
        summary=_rendered(post, "excerpt"),
        published_at=_gmt(post.get("date_gmt")),
        updated_at=_gmt(post.get("modified_gmt")),
        author_name=author_name,
        author_uri=author_uri,
        tags=tags,
        category=category,
        image=image,
        image_alt=image_alt,
        base_url=str(post.get("link") or ""),
        status="pending" if status == "pending" else "publish",
    )
