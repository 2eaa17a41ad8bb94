"""What an SMTP answer means for the delivery and the channel (SMTP-1, SMTP-3).

`classify(code, text, stage)` returns one of:

  sent         2yz
  transient    4yz: retry later with backoff, an attempt is spent
  throttle     421 or 4.7.x: the server wants us slower; requeue without spending an
               attempt and slow down sending to that destination domain
  hard_bounce  5.1.x (bad mailbox/domain), 5.2.1 (disabled), 551/553 without an
               enhanced code: the address is dead, suppress it
  recipient_policy
               5.7.x at RCPT: this one recipient's server refuses us (a block list,
               a closed mailbox); the message fails for good and counts as a soft
               bounce. Only many domains in a row pause the channel (issue 19, item 2)
  policy       5.7.x at connect, AUTH, MAIL FROM or DATA (authentication, reputation,
               DMARC), a refused envelope sender, failed AUTH: our problem, not the
               recipient's; pause the channel and tell the operator, never suppress
               the recipient
  permanent    any other 5yz: this message failed; no retry, no suppression

`stage` is where the answer came: connect | auth | mail | rcpt | data.
"""

from __future__ import annotations

import re

from pipeline.durations import parse_duration, retry_delay  # noqa: F401  (the one duration type)

ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")

KINDS = ("sent", "transient", "throttle", "hard_bounce", "recipient_policy", "policy", "permanent")


def enhanced_status(text: str | bytes) -> str | None:
    """The RFC 3463 status at the start of a reply text, e.g. '5.1.1', or None."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = ENHANCED.match(text or "")
    return ".".join(m.groups()) if m else None


def classify(code: int, text: str | bytes = "", stage: str = "data") -> str:
    status = enhanced_status(text)
    cls = code // 100
    if cls == 2 or (code == 251):
        return "sent"
    if code == 421:
        return "throttle"
    if status and status.startswith("4.7."):
        return "throttle"
    if cls == 4 or code < 200:
        return "transient"
    # 5yz from here on
    if status:
        subject = status.split(".")[1]
        if subject == "7":
            return "recipient_policy" if stage == "rcpt" else "policy"
        if stage == "mail" or status in ("5.1.7", "5.1.8"):
            return "policy"  # our envelope sender is refused
        if subject == "1" or status == "5.2.1":
            return "hard_bounce"
        return "permanent"
    if stage in ("auth", "mail", "connect") or code in (530, 535, 538):
        return "policy"
    if stage == "rcpt" and code in (550, 551, 553):
        return "hard_bounce"
    return "permanent"
