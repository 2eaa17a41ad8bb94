"""Pure pieces of the delivery engine: reply classification (SMTP-1, SMTP-3), the
retry schedule (SMTP-2), VERP tokens (BNC-1), the token bucket (SMTP-6), CRLF (SMTP-7)."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.config import load_settings
from pipeline.delivery.email import verp
from pipeline.delivery.email.channel import to_crlf
from pipeline.delivery.email.classify import classify, enhanced_status, parse_duration, retry_delay
from pipeline.delivery.ratelimit import TokenBucket


@pytest.mark.parametrize(
    "code, text, stage, kind",
    [
        (250, "2.0.0 OK", "data", "sent"),
        (251, "2.1.5 forwarded", "rcpt", "sent"),
        (421, "4.7.0 Try again later", "mail", "throttle"),
        (421, "Service not available", "data", "throttle"),
        (451, "4.7.1 Greylisted, slow down", "rcpt", "throttle"),
        (450, "4.7.28 rate limited", "data", "throttle"),
        (451, "4.3.0 Temporary failure", "data", "transient"),
        (452, "4.2.2 Mailbox full", "rcpt", "transient"),
        (452, "Insufficient system storage", "data", "transient"),
        (550, "5.1.1 No such user", "rcpt", "hard_bounce"),
        (550, "5.1.2 Bad destination domain", "rcpt", "hard_bounce"),
        (550, "5.2.1 Mailbox disabled", "rcpt", "hard_bounce"),
        (550, "User unknown", "rcpt", "hard_bounce"),  # no enhanced code, at RCPT
        (554, "5.7.1 Message rejected by policy", "data", "policy"),
        (550, "5.7.26 Unauthenticated email is not accepted", "data", "policy"),
        # issue 19 item 2: 5.7.x at RCPT is that recipient's refusal, not a reason to pause
        (
            550,
            "5.7.515 Access denied, sending domain does not meet the required authentication level",
            "rcpt",
            "recipient_policy",
        ),
        (554, "5.7.1 Recipient address rejected: blocked", "rcpt", "recipient_policy"),
        (554, "5.7.1 Sender blocked", "mail", "policy"),
        (554, "5.7.1 Service unavailable; client host blocked", "connect", "policy"),
        (553, "5.1.8 Sender address rejected", "mail", "policy"),
        (550, "Sender rejected", "mail", "policy"),
        (535, "5.7.8 Authentication credentials invalid", "auth", "policy"),
        (552, "5.3.4 Message too big", "data", "permanent"),
        (554, "Transaction failed", "data", "permanent"),
    ],
)
def test_reply_classification_table_smtp3(code, text, stage, kind):
    assert classify(code, text, stage) == kind


def test_enhanced_status_is_read_from_the_reply_text():
    assert enhanced_status("5.1.1 <x@y>: Recipient address rejected") == "5.1.1"
    assert enhanced_status(b"4.7.0 slow down") == "4.7.0"
    assert enhanced_status("No code here") is None


def test_default_retry_schedule_ends_after_four_days_smtp2(tmp_path):
    settings = load_settings(None, env={})
    schedule = settings.delivery.retry_schedule
    total = sum((parse_duration(s) for s in schedule), dt.timedelta())
    assert total >= dt.timedelta(days=4)
    assert retry_delay(schedule, 1) == parse_duration(schedule[0])
    assert retry_delay(schedule, len(schedule) + 1) is None  # then the delivery is dead


def test_retry_schedule_is_configurable_smtp2():
    settings = load_settings(None, env={"SYNDICATE_DELIVERY__RETRY_SCHEDULE": "1m, 2h,3d"})
    assert settings.delivery.retry_schedule == ["1m", "2h", "3d"]
    assert retry_delay(settings.delivery.retry_schedule, 2) == dt.timedelta(hours=2)
    assert retry_delay(settings.delivery.retry_schedule, 4) is None


def _settings(tmp_path, key="k" * 40):
    return load_settings(
        None, env={"SYNDICATE_SECRET_KEY": key, "SYNDICATE_SITE__FROM_ADDRESS": "J <digest@news.example.com>"}
    )


def test_verp_roundtrip_and_tampering_bnc1(tmp_path):
    settings = _settings(tmp_path)
    address = verp.encode(settings, 123456)
    assert address.startswith("bounces+") and address.endswith("@news.example.com")
    assert len(address.split("@")[0]) <= 64
    assert verp.decode(settings, address) == 123456
    assert verp.decode(settings, f"Mail Delivery <{address.upper()}>") == 123456  # case folded by a relay
    local, domain = address.split("@")
    ident, mac = local[len("bounces+") :].split("-")
    assert verp.decode(settings, f"bounces+{ident}1-{mac}@{domain}") is None  # another delivery id
    flipped = mac[:-1] + ("a" if mac[-1] != "a" else "b")
    assert verp.decode(settings, f"bounces+{ident}-{flipped}@{domain}") is None
    assert verp.decode(_settings(tmp_path, key="other" * 10), address) is None  # another site's key
    assert verp.decode(settings, "digest@news.example.com") is None


class FrozenClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_token_bucket_never_exceeds_the_rate_under_a_frozen_clock_smtp6():
    clock = FrozenClock()
    bucket = TokenBucket(5.0, burst=5, clock=clock, sleep=clock.sleep)
    sent_at = []
    for _ in range(60):
        bucket.take()
        sent_at.append(clock.now)
    # in any window of one second at most rate + burst tokens, and overall <= rate after the burst
    start = sent_at[0]
    assert sent_at[-1] - start >= (60 - 5) / 5.0 - 1e-9
    for i, t in enumerate(sent_at):
        in_window = [s for s in sent_at[i:] if s < t + 1.0]
        assert len(in_window) <= 5 + 5
    # with the clock frozen, no token appears
    frozen = TokenBucket(2.0, burst=2, clock=lambda: 50.0)
    assert [frozen.try_take() for _ in range(4)] == [True, True, False, False]


def test_token_bucket_slows_down_by_a_factor_after_throttling():
    clock = FrozenClock()
    bucket = TokenBucket(10.0, burst=1, clock=clock, sleep=clock.sleep)
    bucket.slow_down(4)
    bucket.take()
    t0 = clock.now
    for _ in range(10):
        bucket.take()
    assert clock.now - t0 >= 10 / 2.5 - 1e-9


def test_crlf_normalisation_smtp7():
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    same = b"a\r\nb\r\n"
    assert to_crlf(same) is same
