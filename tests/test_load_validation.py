"""Values that would pass start-up and fail later are refused when they load, naming
the key (issue 16 item 14, issue 18 item 7, issue 19 item 8): one duration type for
config, schedules, partners and delivery, ranges on numbers, declared stage options."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.config import load_settings
from pipeline.durations import Duration, parse_duration, retry_delay
from pipeline.errors import ConfigError
from pipeline.ops.schedules import check_stages, parse_schedule


def write(tmp_path, text):
    p = tmp_path / "syndicate.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1.5h", 5400),
        ("45", 45),
        (2.5, 2.5),
    ],
)
def test_durations_accepted(text, seconds):
    assert Duration(text).seconds == seconds
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5min", "-5m", "1e9d", "0s", "0", "400d", "", "m", "5m-", True, None, [1]])
def test_durations_refused(text):
    with pytest.raises(ValueError):
        Duration(text)


def test_duration_keeps_what_the_operator_wrote():
    # `config show` prints the setting as written; the length is a property
    d = Duration("1h30m")
    assert d == "1h30m" and repr(d) == "'1h30m'" and d.timedelta == dt.timedelta(minutes=90)


def test_retry_delay_walks_the_schedule_then_stops():
    schedule = [Duration("5m"), Duration("1h")]
    assert retry_delay(schedule, 0) == dt.timedelta(minutes=5)
    assert retry_delay(schedule, 2) == dt.timedelta(hours=1)
    assert retry_delay(schedule, 3) is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[delivery]\nretry_schedule = ["5min"]\n', "delivery.retry_schedule"),
        ('[delivery]\nretry_schedule = ["5m", "-5m"]\n', "delivery.retry_schedule"),
        ('[delivery]\nretry_schedule = ["1e9d"]\n', "delivery.retry_schedule"),
        ('[feeds]\nhub_retry_schedule = ["soon"]\n', "feeds.hub_retry_schedule"),
        ('[partner_push]\nretry_schedule = ["5m", "forever"]\n', "partner_push.retry_schedule"),
        (
            "[[partners]]\nname='p'\nkind='webhook'\nurl='https://p.example'\nretry_schedule=['1x']\n",
            "partners[0].retry_schedule",
        ),
        (
            "[[partners]]\nname='p'\nkind='webhook'\nurl='https://p.example'\nread_timeout=-1\n",
            "partners[0].read_timeout",
        ),
        ("[[partners]]\nname='p'\nkind='webhook'\nurl='https://p.example'\nsince='last week'\n", "partners[0].since"),
        ("[site]\ntimezone = 'Mars/Olympus'\n", "site.timezone"),
    ],
)
def test_bad_value_fails_at_load_naming_the_key_h14(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert needle in info.value.message and info.value.hint


def test_bad_duration_from_the_environment_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="SYNDICATE_DELIVERY__RETRY_SCHEDULE"):
        load_settings(write(tmp_path, ""), env={"SYNDICATE_DELIVERY__RETRY_SCHEDULE": "5m,5min"})


def test_retry_schedules_load_as_durations(tmp_path):
    s = load_settings(write(tmp_path, '[delivery]\nretry_schedule = ["1h30m", "2d"]\n'), env={})
    assert [d.seconds for d in s.delivery.retry_schedule] == [5400, 172800]
    assert all(isinstance(d, Duration) for d in s.partner_push.retry_schedule)  # defaults too
    assert s.effective()["delivery"]["retry_schedule"] == ["1h30m", "2d"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[digests]\nmax_articles = -5\n", "digests.max_articles = -5 must be at least 1"),
        ("[digests]\ndaily_hour = 24\n", "digests.daily_hour = 24 must be at most 23"),
        ("[web]\nport = 70000\n", "web.port = 70000 must be at most 65535"),
        ("[delivery]\nbatch_size = 0\n", "delivery.batch_size = 0 must be at least 1"),
        ("[email]\nsmtp_timeout = 0\n", "email.smtp_timeout = 0 must be more than 0"),
        ("[partner_push]\nretry_jitter = 2\n", "partner_push.retry_jitter = 2 must be at most 1"),
    ],
)
def test_numbers_out_of_range_fail_at_load_19_8(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert needle in info.value.message


def test_range_applies_to_the_environment_too(tmp_path):
    with pytest.raises(ConfigError, match="SYNDICATE_DIGESTS__MAX_ARTICLES"):
        load_settings(write(tmp_path, ""), env={"SYNDICATE_DIGESTS__MAX_ARTICLES": "-5"})


def job(args: str, stage: str = "digest") -> str:
    return f'[[jobs]]\nid = "d"\nstage = "{stage}"\nargs = {args}\ninterval = "10m"\n'


@pytest.mark.parametrize(
    "args, needle",
    [
        ('{ frequncy = "daily" }', "takes no option 'frequncy'"),
        ('{ frequency = "hourly" }', "'hourly' is not one of instant, daily, weekly"),
        ('{ chunk = "3/2" }', "option 'chunk'"),
    ],
)
def test_misspelt_or_bad_stage_argument_fails_at_load_h14(args, needle):
    with pytest.raises(ConfigError) as info:
        parse_schedule(job(args), "s.toml")
    assert "job 'd': args" in info.value.message and needle in info.value.message


def test_declared_stage_options_load():
    (spec,) = parse_schedule(job('{ frequency = "daily", chunk = "1/2" }'), "s.toml")
    assert spec.args == {"frequency": "daily", "chunk": "1/2"}
    (spec,) = parse_schedule(job("{ limit = 50 }", stage="deliver"), "s.toml")
    assert spec.args == {"limit": 50}


def test_function_stage_argument_checked_against_its_signature_h14():
    specs = parse_schedule(job("{ secnds = 1 }", stage="tests.stage_fixtures:sleepy"), "s.toml")
    with pytest.raises(ConfigError, match="takes no argument 'secnds'"):
        check_stages(specs)
    check_stages(parse_schedule(job("{ seconds = 1 }", stage="tests.stage_fixtures:sleepy"), "s.toml"))


def test_interval_uses_the_one_duration_type():
    for bad in ('"-5m"', '"1e9d"', '"5min"'):
        with pytest.raises(ConfigError, match="interval"):
            parse_schedule(f'[[jobs]]\nid = "d"\nstage = "ingest"\ninterval = {bad}\n', "s.toml")
