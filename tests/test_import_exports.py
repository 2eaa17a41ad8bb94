"""Importing the files people bring when they move a list here (IMP-7,
pipeline.subscribers.columns): our own `subscribers export`, listmonk's subscriber
export, Ghost's member export and Mailchimp's audience exports. Whoever such a file says
is not subscribed (unsubscribed, blocklisted, cleaned, deleted, or never confirmed when
the import is --confirmed) is left out and reported with the column that said so; the
columns nothing reads are named. Both databases.

The defect it fixes: `subscribers export` from one server imported into another with
--confirmed subscribed everyone again, the people who had unsubscribed or were
suppressed included (the `state` column was not read).
"""

from __future__ import annotations

import io

from sqlalchemy import select

from pipeline import subscribers as subs
from pipeline.store.schema import subscribers
from pipeline.subscribers import imports
from pipeline.subscribers.csv_io import export_csv
from pipeline.subscribers.suppression import suppress
from tests.test_subscriber_import import invoke, run


def people(app) -> dict[str, tuple[str, str]]:
    with app.engine.connect() as conn:
        rows = conn.execute(select(subscribers.c.email, subscribers.c.state, subscribers.c.name))
        return {email: (state, name) for email, state, name in rows}


def notes(report, kind="skipped") -> dict[int, tuple[str, str]]:
    return {n.line: (n.field, n.message) for n in report.notes if n.kind == kind}


def test_our_own_export_moved_to_another_server_leaves_out_who_withdrew_imp7(app, make_app, tmp_path):
    """IMP-7: export on one server, import with --confirmed on another: the unsubscribed,
    the suppressed and the never-confirmed stay out (before: all four were confirmed)."""
    old = make_app(f"sqlite:///{tmp_path / 'old' / 'var' / 'syndicate.db'}", root=tmp_path / "old")
    run(old, "email,name\nana@example.com,Ana\nbo@example.com,Bo\ncy@example.com,Cy\n", confirmed=True, source="x")
    run(old, "email\ndee@example.com\n")  # a sign-up never confirmed
    with old.engine.begin() as conn:
        subs.unsubscribe(conn, old.settings, subs.get(conn, "bo@example.com")["id"])
        suppress(conn, old.settings, "cy@example.com", reason="complaint", source="fbl")
        stream = io.StringIO()
        export_csv(conn, stream)
    text = stream.getvalue()
    assert text.splitlines()[0].startswith("email,name,state,")

    report = run(app, text, confirmed=True, source="the old server")
    assert people(app) == {"ana@example.com": ("confirmed", "Ana")}
    assert (report.created, report.skipped, report.bad) == (1, 3, 0)
    skipped = {n.message.split(":")[0]: n.field for n in report.notes if n.kind == "skipped"}
    assert skipped == {"bo@example.com": "state", "cy@example.com": "state", "dee@example.com": "state"}
    why = {n.message.split(":")[0]: n.message for n in report.notes}
    assert "'unsubscribed' in the file: not subscribed there" in why["bo@example.com"]
    assert "'suppressed'" in why["cy@example.com"]
    assert "never confirmed" in why["dee@example.com"] and "without --confirmed" in why["dee@example.com"]
    assert report.consent_columns == ["state", "unsubscribed_at"]
    assert report.ignored_columns == ["source", "created_at", "confirmed_at"]

    # Without --confirmed, the never-confirmed sign-up gets its confirmation email; the rest stays out.
    again = run(app, text)
    assert (again.created, again.confirmations_queued, again.unchanged, again.skipped) == (1, 1, 1, 2)
    assert people(app)["dee@example.com"][0] == "unconfirmed"
    assert "bo@example.com" not in people(app) and "cy@example.com" not in people(app)


GHOST = """id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,created_at,deleted_at,labels,tiers
m1,grace@example.com,Grace Hopper,"VIP, early",true,true,cus_1,2024-01-15T10:00:00.000Z,,vip,
m2,kat@example.com,Katherine Johnson,,false,false,,2024-02-01T10:00:00.000Z,,,
m3,gone@example.com,Gone,,true,false,,2024-02-01T10:00:00.000Z,2025-03-01T09:00:00.000Z,,
m4,odd@example.com,Odd,,perhaps,false,,2024-02-01T10:00:00.000Z,,,
"""

LISTMONK = """uuid,email,name,attributes,status,created_at,updated_at
u1,lin@example.com,Lin,"{""city"": ""Oslo""}",enabled,2025-01-01 10:00:00,2025-01-01 10:00:00
u2,blo@example.com,Blo,{},blocklisted,2025-01-01 10:00:00,2025-01-01 10:00:00
u3,dis@example.com,Dis,{},disabled,2025-01-01 10:00:00,2025-01-01 10:00:00
u4,may@example.com,May,{},maybe,2025-01-01 10:00:00,2025-01-01 10:00:00
"""

MAILCHIMP_HEAD = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,TIMEZONE,CC,LEID,EUID,NOTES,TAGS"
)
MAILCHIMP_SUBSCRIBED = MAILCHIMP_HEAD + (
    '\nsub@example.com, Ada , Lovelace ,2,2018-02-12 10:54:27,2018-02-12 10:54:27,Europe/London,GB,1,a,,"""Ed"""\n'
    "last@example.com,,Simet,2,2018-02-12 10:54:27,2018-02-12 10:54:27,,,2,b,,\n"
)
MAILCHIMP_UNSUBSCRIBED = (
    "Email Address,First Name,Last Name,OPTIN_TIME,UNSUB_TIME,UNSUB_REASON,TAGS\n"
    "uns@example.com,Un,Sub,2018-02-12 10:54:27,2018-07-23 12:19:27,,\n"
)
MAILCHIMP_CLEANED = (
    "Email Address,First Name,Last Name,OPTIN_TIME,CLEAN_TIME,TAGS\n"
    "cln@example.com,Clean,Ed,2018-02-12 10:54:27,2020-03-23 17:30:05,\n"
)


def test_a_ghost_member_export_leaves_out_who_does_not_get_emails_imp7(app):
    report = run(app, GHOST, confirmed=True, source="ghost")
    assert people(app) == {"grace@example.com": ("confirmed", "Grace Hopper")}
    assert notes(report) == {
        3: (
            "subscribed_to_emails",
            "kat@example.com: subscribed_to_emails is 'false' in the file: not subscribed there, left out",
        ),
        4: (
            "deleted_at",
            "gone@example.com: deleted_at is '2025-03-01T09:00:00.000Z' in the file: not subscribed there, left out",
        ),
    }
    assert notes(report, "bad") == {
        5: ("subscribed_to_emails", "subscribed_to_emails 'perhaps' is neither true nor false")
    }
    assert report.consent_columns == ["subscribed_to_emails", "deleted_at"]
    assert report.ignored_columns == [
        "id",
        "note",
        "complimentary_plan",
        "stripe_customer_id",
        "created_at",
        "labels",
        "tiers",
    ]


def test_a_listmonk_export_leaves_out_the_blocklisted_and_disabled_imp7(app):
    report = run(app, LISTMONK, confirmed=True, source="listmonk")
    assert people(app) == {"lin@example.com": ("confirmed", "Lin")}
    assert {line: field for line, (field, _m) in notes(report).items()} == {3: "status", 4: "status"}
    assert "'blocklisted' in the file" in notes(report)[3][1]
    field, message = notes(report, "bad")[5]
    assert field == "status" and "'maybe' is not a state this import knows" in message and "blocklisted" in message


def test_mailchimp_exports_take_the_name_from_its_parts_and_leave_out_unsubscribed_and_cleaned_imp7(app):
    report = run(app, MAILCHIMP_SUBSCRIBED, confirmed=True, source="mailchimp")
    assert people(app) == {"sub@example.com": ("confirmed", "Ada Lovelace"), "last@example.com": ("confirmed", "Simet")}
    assert report.bad == 0 and report.consent_columns == []
    assert report.ignored_columns == [
        "MEMBER_RATING",
        "OPTIN_TIME",
        "CONFIRM_TIME",
        "CC",
        "LEID",
        "EUID",
        "NOTES",
        "TAGS",
    ]
    with app.engine.connect() as conn:
        assert subs.get(conn, "sub@example.com")["timezone"] == "Europe/London"
    for text, column in ((MAILCHIMP_UNSUBSCRIBED, "UNSUB_TIME"), (MAILCHIMP_CLEANED, "CLEAN_TIME")):
        report = run(app, text, confirmed=True, source="mailchimp")
        assert report.created == 0 and report.skipped == 1 and report.consent_columns == [column]
        assert notes(report)[2][0] == column
    assert len(people(app)) == 2


def test_a_left_out_address_counts_for_duplicates_and_a_name_column_wins_over_its_parts(app):
    text = (
        "email,name,first_name,last_name,state\n"
        "ana@example.com,Ana Full,A,B,unsubscribed\n"
        "ana@example.com,Ana Full,A,B,confirmed\n"  # the same person again: not imported behind the first row's back
        "bo@example.com,Bo Full,B,C,\n"
    )
    report = run(app, text, confirmed=True, source="x")
    assert people(app) == {"bo@example.com": ("confirmed", "Bo Full")}
    assert notes(report)[2][0] == "state"
    assert notes(report, "bad")[3] == ("email", "ana@example.com appears more than once; this row was skipped")
    assert report.ignored_columns == ["first_name", "last_name"]


def test_the_cli_names_the_consent_columns_it_read_and_the_columns_it_did_not_import(app, tmp_path):
    path = tmp_path / "members.csv"
    path.write_text(GHOST)
    r = invoke(app, "subscribers", "import", str(path), "--confirmed", "--source", "ghost", "--no-progress")
    assert r.exit_code == 0, r.output
    assert (
        "rows left out where these columns say the person is not subscribed: subscribed_to_emails, deleted_at"
        in r.output
    )
    assert (
        "columns not imported: id, note, complimentary_plan, stripe_customer_id, created_at, labels, tiers" in r.output
    )
    assert f"{path}:3: kat@example.com: subscribed_to_emails is 'false'" in r.output
    assert "import 1: total 4, created 1, updated 0, unchanged 0, skipped 2, bad 1" in r.output
    with app.engine.connect() as conn:
        job = imports.get_import(conn, 1)
    assert [(e["line"], e["kind"], e["field"]) for e in job["errors"]] == [
        (3, "skipped", "subscribed_to_emails"),
        (4, "skipped", "deleted_at"),
        (5, "bad", "subscribed_to_emails"),
    ]


def test_a_state_column_of_regions_is_refused_row_by_row_with_the_way_out(app):
    """A CRM export's `State` of US states is not read as a subscription state (that
    could let an unknown withdrawal through): each row is bad and says to rename it."""
    report = run(
        app, "Email,Name,State\nann@example.com,Ann,CA\nbob@example.com,Bob,NY\n", confirmed=True, source="crm"
    )
    assert people(app) == {} and report.bad == 2
    field, message = notes(report, "bad")[2]
    assert field == "State" and "'CA' is not a state this import knows" in message and "rename it" in message
    renamed = run(app, "Email,Name,Region\nann@example.com,Ann,CA\n", confirmed=True, source="crm")
    assert renamed.created == 1 and renamed.ignored_columns == ["Region"]


def test_a_spreadsheet_csv_with_semicolons_or_tabs_imports_like_commas(app):
    """A spreadsheet saves "CSV" with semicolons where the comma is the decimal mark: the
    whole header was one column, "no 'email' column in the header line"."""
    semicolons = "E-Mail;Name;Frequency;Topics\nann@example.com;Ann Dupont;daily;work,wellbeing\n"
    report = run(app, semicolons, confirmed=True, source="tableur")
    assert report.created == 1 and report.bad == 0
    assert run(app, "email\tname\nbob@example.com\tBob, Jr.\n", confirmed=True, source="sheet").created == 1
    with app.engine.connect() as conn:
        ann = subs.get(conn, "ann@example.com")
        assert (ann["name"], ann["frequency"], ann["topics"]) == ("Ann Dupont", "daily", ["wellbeing", "work"])
        assert subs.get(conn, "bob@example.com")["name"] == "Bob, Jr."


def test_an_empty_file_imports_nothing_and_says_nothing_is_wrong(app):
    report = run(app, "", confirmed=True, source="x")
    assert (report.total, report.created, report.bad) == (0, 0, 0) and report.ignored_columns == []
