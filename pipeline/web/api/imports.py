"""/api/v1/imports: upload a CSV of subscribers, then follow its progress and per-row errors.

The upload is stored in a temporary file and run by pipeline.subscribers.imports (the
engine `syndicate subscribers import` uses) in a background thread, batch by batch in
its own transactions; `GET /imports/{id}` reads the import's row and its row notes.
A repeated upload with the same Idempotency-Key starts no second import (API-5).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pipeline.accounts import audit
from pipeline.web.api.core import ApiProblem, actor, api_of, scoped

log = logging.getLogger(__name__)

router = APIRouter(tags=["imports"])

MAX_ERRORS = 1000


class ImportRow(BaseModel):
    line: int
    kind: str = Field(description="bad (skipped: field and why) or skipped (an unsubscribed or suppressed address)")
    field: str
    message: str


class ImportOut(BaseModel):
    id: int
    status: str = Field(description="queued | running | done | failed")
    filename: str
    source: str
    confirmed: bool
    total: int
    created: int
    updated: int
    unchanged: int
    skipped: int
    bad: int
    confirmed_count: int
    confirmations_queued: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str
    errors: list[ImportRow] = Field(description=f"Row notes in line order (at most {MAX_ERRORS}).")


def _out(row: dict[str, Any]) -> ImportOut:
    return ImportOut(**{k: row[k] for k in ImportOut.model_fields if k != "errors"}, errors=row.get("errors", []))


def _run_in_background(api: Any, import_id: int, path: str) -> None:
    from pipeline.subscribers.imports import run_import

    def work() -> None:
        try:
            run_import(api.app.engine, api.settings, import_id, path)
        except Exception as exc:  # recorded on the import's row by run_import; the thread just ends
            log.warning("subscriber import %s failed: %s", import_id, exc)
        finally:
            os.unlink(path)

    threading.Thread(target=work, name=f"api-import-{import_id}", daemon=True).start()


@router.post(
    "/imports",
    status_code=202,
    response_model=ImportOut,
    **scoped("subscribers:import", idempotent_write=True),
)
def create_import(
    request: Request,
    file: Annotated[
        UploadFile, File(description="CSV, UTF-8: email,name,frequency,topics,timezone (topics with ';').")
    ],
    source: str = Form("", max_length=200, description="Where these people gave their consent."),
    confirmed: bool = Form(False, description="They confirmed already (needs `source`): no confirmation emails."),
) -> JSONResponse:
    """Start an import of a CSV file; 202 with the import (status `queued`) and a
    `Location` to follow. Without `confirmed` each new address gets double opt-in."""
    from pipeline.subscribers import imports

    api = api_of(request)
    fd, path = tempfile.mkstemp(prefix="syndicate-import-", suffix=".csv")
    with os.fdopen(fd, "wb") as out:
        while chunk := file.file.read(1 << 16):
            out.write(chunk)
    try:
        with api.begin() as conn:
            import_id = imports.create_import(
                conn,
                filename=file.filename or "upload.csv",
                source=source,
                confirmed=confirmed,
                created_by=actor(request),
            )
            audit.record(conn, actor=actor(request), action="api.subscribers.import", target=str(import_id), via="api")
            row = imports.get_import(conn, import_id, errors_limit=0)
    except BaseException:
        os.unlink(path)
        raise
    _run_in_background(api, import_id, path)
    body = _out(row).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/imports/{import_id}"})


@router.get("/imports/{import_id}", response_model=ImportOut, **scoped("subscribers:import"))
def get_import(
    request: Request,
    import_id: int,
    errors: int = Query(100, ge=0, le=MAX_ERRORS, description="How many row notes to include."),
) -> ImportOut:
    """An import's status, counts and row notes (line, field, why)."""
    from pipeline.errors import NotFound
    from pipeline.subscribers import imports

    api = api_of(request)
    try:
        with api.connect() as conn:
            row = imports.get_import(conn, import_id, errors_limit=errors)
    except NotFound:
        raise ApiProblem(404, "Not Found", f"no import {import_id}", kind="not-found") from None
    return _out(row)
