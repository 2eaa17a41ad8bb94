"""The subscribers stage: who gets mail, and their consent. No HTTP and no click in here.

Modules, one responsibility each:

- ``addresses``: which addresses we accept (IDNA domains; SMTPUTF8 local parts only
  with ``email.smtputf8``) and how an address is written into a header;
- ``fields``: the preferences a subscriber chooses, checked; the subscribe form's context;
- ``consent``: the consent log (GDPR-1) and the sign-up rate limits (DOI-2);
- ``links``: the confirm, preferences and unsubscribe links and their tokens (UNS-1);
- ``state``: the state machine (DOI-1): sign-up, confirm, preferences, withdrawal,
  suppression;
- ``imports``: the bulk import engine (batched, with an import row and per-row notes;
  ``csv_io.import_csv`` is its one-call form for small files);
- ``operator``: add, remove (withdraw or erase) and purge (GDPR-2);
- ``csv_io``: import and export;
- ``emails``: the confirmation, "already subscribed" and welcome emails (outbox kinds
  ``confirm``, ``subscribed_notice``, ``welcome``);
- ``suppression``: the suppression list's one owner (the hook delivery calls);
  ``suppression_list``: the table itself, read by the state machine.

The package itself is the API: ``from pipeline import subscribers`` and then
``subscribers.confirm(...)``. Each name is imported from its module on first use
(PEP 562), so importing one module (``pipeline.subscribers.addresses`` from the digest
renderer, say) does not load the rest.
"""

from __future__ import annotations

import importlib

_MODULES = {
    "addresses": (
        "InvalidInput",
        "UndeliverableAddress",
        "normalise_email",
        "smtputf8_enabled",
        "envelope_address",
        "format_to",
    ),
    "fields": (
        "FREQUENCIES",
        "MAX_TOPICS",
        "MAX_NAME",
        "TOPIC_RE",
        "timezone_names",
        "clean_name",
        "clean_frequency",
        "clean_timezone",
        "clean_topics",
        "available_topics",
        "wording_version",
        "clean_wording_version",
        "form_context",
    ),
    "consent": ("RATE_WINDOW", "RateLimited", "Client", "record_event", "history", "check_rate"),
    "links": (
        "ListLinks",
        "list_id",
        "list_token",
        "verify_list_token",
        "unsubscribe_url",
        "preferences_url",
        "confirm_token",
        "confirm_url",
    ),
    "state": (
        "STATES",
        "LinkExpired",
        "LinkUsed",
        "SignupResult",
        "get",
        "get_by_id",
        "require_subscriber",
        "list_subscribers",
        "counts_by_state",
        "is_suppressed_address",
        "may_receive",
        "request_subscription",
        "check_confirm_token",
        "confirm",
        "resend_confirmation",
        "update_preferences",
        "unsubscribe",
        "mark_suppressed",
        "lift_suppression",
    ),
    "imports": ("create_import", "run_import", "get_import", "errors_csv"),
    "operator": ("add", "remove", "purge_unconfirmed", "purge_stage"),
    "csv_io": ("IMPORT_COLUMNS", "EXPORT_COLUMNS", "ImportReport", "import_csv", "export_csv"),
    "emails": ("build_confirm_email", "build_notice_email", "build_welcome_email", "queue_welcome"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.subscribers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pipeline.subscribers.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
