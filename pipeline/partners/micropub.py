"""The Micropub pusher (MP-1..3): create an h-entry as JSON with a Bearer token, keep
the returned Location as the syndicated URL, and send later revisions as `update`
(replace) and a retraction as `delete` of that URL.

A create for an article the partner already holds (a replay, or a publish after a
crash that lost our record of the answer but not the partner's) is sent as an update,
so the partner never gets two copies from us.
"""

from __future__ import annotations

import html.parser
import json
from urllib.parse import urljoin

import requests

from pipeline.partners import state
from pipeline.partners.channel import NotReady, PartnerChannel
from pipeline.partners.config import Partner, secrets_of
from pipeline.partners.http import Answer, Verdict, request


def h_entry_properties(data: dict) -> dict:
    """Event data -> Micropub properties (MP-2; CANON-1: url and the back-link in content)."""
    categories = list(data.get("tags") or [])
    if data.get("category") and data["category"] not in categories:
        categories.append(data["category"])
    props = {
        "name": [data["title"]],
        "summary": [data["summary"]],
        "content": [{"html": data["content_html"]}],
        "url": [data["canonical_url"]],
        "published": [data["published_at"]],
        "updated": [data["updated_at"]],
        "category": categories,
    }
    author = data.get("author") or {}
    if author.get("name"):
        card = {"name": [author["name"]]}
        if author.get("url"):
            card["url"] = [author["url"]]
        props["author"] = [{"type": ["h-card"], "properties": card}]
    return props


def create_request(data: dict) -> dict:
    return {"type": ["h-entry"], "properties": h_entry_properties(data)}


def update_request(location: str, data: dict) -> dict:
    props = h_entry_properties(data)
    return {
        "action": "update",
        "url": location,
        "replace": {k: props[k] for k in ("name", "summary", "content", "category", "updated")},
    }


def delete_request(location: str) -> dict:
    return {"action": "delete", "url": location}


class _LinkFinder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.href = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.href is None and tag in ("link", "a") and "micropub" in (a.get("rel") or "").split():
            self.href = a.get("href")


def discover_endpoint(answer: Answer, page_url: str) -> str | None:
    """MP-1: rel="micropub" from the HTTP Link header, else from an HTML <link>."""
    for link in requests.utils.parse_header_links(answer.header("link")) if answer.header("link") else []:
        if "micropub" in (link.get("rel") or "").split():
            return urljoin(page_url, link["url"])
    finder = _LinkFinder()
    finder.feed(answer.text)
    return urljoin(page_url, finder.href) if finder.href else None


def micropub_token(settings, partner: Partner) -> str:
    secrets = secrets_of(settings, partner)
    if not secrets:
        raise NotReady(
            f"no Micropub token: environment variable {partner.secret_env or '(secret_env not set)'} is empty; "
            "set it to the partner's Bearer token"
        )
    return secrets[0]


class MicropubChannel(PartnerChannel):
    channel = "micropub"

    def __init__(self, settings, engine):
        super().__init__(settings, engine)
        self._endpoints: dict[str, str] = {}

    def endpoint(self, partner: Partner) -> tuple[str | None, Answer | None]:
        if not partner.discover:
            return partner.url, None
        if partner.name in self._endpoints:
            return self._endpoints[partner.name], None
        answer = request(self.session(partner), partner, "GET", partner.url, headers={"Accept": "text/html, */*;q=0.5"})
        if not answer.ok:
            return None, answer
        found = discover_endpoint(answer, partner.url)
        if not found:
            return None, Answer(
                None, {}, "", "connection", f'no rel="micropub" link at {partner.url} (MP-1)', answer.duration_ms
            )
        self._endpoints[partner.name] = found
        return found, None

    def _call(self, partner: Partner, endpoint: str, body: dict, idempotency_key: str) -> Answer:
        return request(
            self.session(partner),
            partner,
            "POST",
            endpoint,
            data=json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8"),
            headers={
                "Authorization": f"Bearer {micropub_token(self.settings, partner)}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Idempotency-Key": idempotency_key,
            },
        )

    def push(self, partner: Partner, row: dict):
        micropub_token(self.settings, partner)  # NotReady before any request
        endpoint, failed = self.endpoint(partner)
        if endpoint is None:
            return failed, ""
        payload = row["payload"]
        data = payload["event"]["data"]
        with self.engine.connect() as conn:
            syn = state.syndication(conn, partner.name, row["article_id"])
        live = syn if syn and syn["deleted_at"] is None else None
        key = payload.get("idempotency_key", "")
        if row["kind"] == "article.retracted":
            if live is None:
                return None, "nothing to delete: the partner holds no copy"
            row["_mp_action"] = "delete"
            return self._call(partner, endpoint, delete_request(live["location"]), key), ""
        if live is not None:
            row["_mp_action"] = "update"
            return self._call(partner, endpoint, update_request(live["location"], data), key), ""
        row["_mp_action"] = "create"
        row["_mp_endpoint"] = endpoint
        return self._call(partner, endpoint, create_request(data), key), ""

    def judge(self, partner: Partner, row: dict, answer: Answer) -> Verdict:
        verdict = super().judge(partner, row, answer)
        if answer.status_code in (401, 403):
            try:
                error = json.loads(answer.text).get("error", "")
            except (ValueError, AttributeError):
                error = ""
            # MP-3: unauthorized / insufficient_scope / forbidden will not fix themselves
            return Verdict(
                "alert",
                f"HTTP {answer.status_code} {error or 'unauthorized'}: the Micropub token "
                f"in {partner.secret_env} is refused or lacks the scope; "
                f"get a new token, then `syndicate partners retry {partner.name} --failed`",
            )
        if verdict.kind == "sent" and row.get("_mp_action") == "create" and answer.status_code not in (201, 202):
            return Verdict(
                "failed", f"HTTP {answer.status_code}: a Micropub create must answer 201 or 202 with a Location (MP-3)"
            )
        return verdict

    def after_success(self, partner: Partner, row: dict, answer: Answer) -> str:
        action = row.get("_mp_action")
        location = answer.header("location")
        if action == "create":
            if not location:
                state.alert(
                    self.engine,
                    partner.name,
                    f"created article {row['article_id']} but the answer had no Location (MP-3); "
                    "later updates and the retraction cannot be sent",
                )
                return "no Location in the answer"
            location = urljoin(row.get("_mp_endpoint") or partner.url, location)
            state.save_syndication(self.engine, partner.name, row["article_id"], location, row.get("revision_id"))
            return f"syndicated at {location}"
        if action == "update":
            if location and answer.status_code == 201:  # the post moved (MP: update may answer 201 + Location)
                state.save_syndication(self.engine, partner.name, row["article_id"], location, row.get("revision_id"))
            else:
                state.mark_syndication(self.engine, partner.name, row["article_id"], revision_id=row.get("revision_id"))
            return "updated"
        if action == "delete":
            state.mark_syndication(self.engine, partner.name, row["article_id"], deleted=True)
            return "deleted"
        return ""
