"""The SMTP sender: one object is one connection lane (smtplib underneath).

- Security: `starttls` (fails closed when the server does not offer it), `tls`
  (implicit TLS, port 465) or `none` (local relays only); certificates are verified
  against the system store or `delivery.smtp_ca_file`. AUTH when a user is set.
- A connection is reused for `delivery.messages_per_connection` messages (SMTP-5),
  and reopened after a disconnect or a 421.
- When the server offers PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one
  write and their replies are read together: one round trip instead of three.
  smtplib has no pipelining, so this path drives smtplib's own socket with its
  `send()` and `getreply()`; everything else (connect, STARTTLS, AUTH) is smtplib.
- Every reply is classified (pipeline.delivery.email.classify); failures raise
  `SendFailure(kind, ...)` with the code, the stage and, for partial recipient
  refusals, the refused recipients. The bytes given are sent as they are: they are
  CRLF already (SMTP-7) and, when DKIM is on, exactly the signed bytes (DKIM-4).
"""

from __future__ import annotations

import logging
import smtplib
import ssl

from pipeline.config import Settings
from pipeline.delivery.email.channel import OutgoingEmail, SendFailure, SendResult
from pipeline.delivery.email.classify import classify

log = logging.getLogger(__name__)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _check_address(address: str) -> str:
    # MSG-5 for the envelope: an address must never smuggle in another command.
    if any(c in address for c in "\r\n<>") or not address.strip():
        raise SendFailure("permanent", f"refusing to send to the malformed address {address!r}")
    return address


def quote_periods(data: bytes) -> bytes:
    """Dot-stuffing (RFC 5321 §4.5.2) for CRLF data; bytes.replace instead of
    smtplib's regular expression, which cost more than the send itself."""
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    return data


class SMTPSender:
    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        ca_file: str = "",
        messages_per_connection: int = 100,
        pipelining: bool = True,
        local_hostname: str | None = None,
    ):
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"unknown smtp_security {security!r}")
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.timeout = username, password, timeout
        self.ca_file = ca_file
        self.messages_per_connection = max(1, messages_per_connection)
        self.pipelining = pipelining
        self.local_hostname = local_hostname
        self.smtp: smtplib.SMTP | None = None
        self.utf8 = False  # this message needs SMTPUTF8
        self.sent_on_connection = 0
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SMTPSender:
        e, d = settings.email, settings.delivery
        ca = str(settings.path("delivery.smtp_ca_file")) if d.smtp_ca_file else ""
        return cls(
            host=e.smtp_host,
            port=e.smtp_port,
            security=e.smtp_security,
            username=e.smtp_username,
            password=e.smtp_password,
            timeout=e.smtp_timeout,
            ca_file=ca,
            messages_per_connection=d.messages_per_connection,
            pipelining=d.pipelining,
        )

    # --- connections ---------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)

    def connect(self) -> None:
        self.close()
        where = f"{self.host}:{self.port}"
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._tls_context(),
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        except smtplib.SMTPConnectError as exc:
            kind = classify(exc.smtp_code, exc.smtp_error, "connect")
            raise SendFailure(
                "throttle" if kind == "throttle" else "connection",
                f"{where} refused the connection: {exc.smtp_code} {_text(exc.smtp_error)}",
                code=exc.smtp_code,
                stage="connect",
            ) from None
        except ssl.SSLError as exc:
            raise SendFailure("policy", f"TLS with {where} failed: {exc}", stage="connect") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SendFailure("connection", f"cannot connect to {where}: {exc}", stage="connect") from None
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SendFailure(
                        "policy",
                        f"{where} does not offer STARTTLS; refusing to send in clear text "
                        "(email.smtp_security = starttls fails closed)",
                        stage="connect",
                    )
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except SendFailure:
            self._abandon(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._abandon(smtp)
            raise SendFailure(
                "policy",
                f"{where} refused our login as {self.username!r}: {exc.smtp_code} {_text(exc.smtp_error)}",
                code=exc.smtp_code,
                stage="auth",
            ) from None
        except smtplib.SMTPResponseException as exc:
            self._abandon(smtp)
            kind = classify(exc.smtp_code, exc.smtp_error, "auth")
            raise SendFailure(
                kind if kind != "sent" else "transient",
                f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)} while setting up the session",
                code=exc.smtp_code,
                stage="auth",
            ) from None
        except ssl.SSLError as exc:
            self._abandon(smtp)
            raise SendFailure("policy", f"TLS with {where} failed: {exc}", stage="connect") from None
        except (OSError, smtplib.SMTPException) as exc:
            self._abandon(smtp)
            raise SendFailure(
                "connection", f"{where} dropped the session while setting it up: {exc}", stage="connect"
            ) from None
        self.smtp = smtp
        self.sent_on_connection = 0
        self.connections_opened += 1

    @staticmethod
    def _abandon(smtp: smtplib.SMTP) -> None:
        try:
            smtp.close()
        except Exception:  # closing a broken socket must not hide the real error
            pass

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except Exception:  # the server may already be gone; we are leaving anyway
            self._abandon(smtp)

    def _lost(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            self._abandon(smtp)

    def _rset(self) -> None:
        try:
            code, _ = self.smtp.rset()
            if code != 250:
                self._lost()
        except Exception:  # a failed RSET means the session is unusable
            self._lost()

    # --- sending -------------------------------------------------------------------

    def send(self, message: OutgoingEmail) -> str:
        return self.send_result(message).answer

    def send_result(self, message: OutgoingEmail) -> SendResult:
        """Send one message; returns the server's final answer and any refused
        recipients (when others were accepted). Raises SendFailure."""
        recipients = [_check_address(r) for r in message.recipients]
        sender = _check_address(message.envelope_from) if message.envelope_from else ""
        if self.smtp is None or self.sent_on_connection >= self.messages_per_connection:
            self.connect()
        self.utf8 = False
        recipients = [self._envelope_address(r) for r in recipients]
        sender = self._envelope_address(sender) if sender else ""
        self.smtp.command_encoding = "utf-8" if self.utf8 else "ascii"
        self.sent_on_connection += 1
        try:
            if self.pipelining and self.smtp.has_extn("pipelining"):
                return self._send_pipelined(
                    sender, recipients, message.data, dot_free=getattr(message, "dot_free", False)
                )
            return self._send_stepwise(sender, recipients, message.data)
        except SendFailure:
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._lost()
            raise SendFailure(
                "connection", f"connection to {self.host}:{self.port} lost: {exc}", stage="data"
            ) from None

    def _envelope_address(self, address: str) -> str:
        """An address as the envelope may carry it: the domain IDNA-encoded; a non-ASCII
        local part only when the server offers SMTPUTF8 (RFC 6531). Anything else can
        never be delivered over this server: a permanent failure, not a retry for days
        (issue 19, item 7)."""
        if address.isascii():
            return address
        local, _, domain = address.rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise SendFailure(
                "permanent",
                f"the domain of {address!r} is not a valid internationalised domain name (IDNA)",
                stage="rcpt",
            ) from None
        if not local.isascii():
            if not self.smtp.has_extn("smtputf8"):
                raise SendFailure(
                    "permanent",
                    f"{address!r} has a non-ASCII local part and "
                    f"{self.host}:{self.port} does not offer SMTPUTF8 (RFC 6531)",
                    stage="rcpt",
                )
            self.utf8 = True
        return f"{local}@{domain}"

    def _mail_options(self, data: bytes) -> list[str]:
        options = [f"SIZE={len(data)}"] if self.smtp.has_extn("size") else []
        if self.utf8:
            options.append("SMTPUTF8")
        return options

    def _fail(self, code: int, text: bytes | str, stage: str, what: str, refused=None) -> SendFailure:
        text = _text(text)
        kind = classify(code, text, stage)
        if kind == "sent":
            kind = "transient"
        if code == 421:
            self._lost()
        elif self.smtp is not None:
            self._rset()
        return SendFailure(kind, f"{what}: {code} {text}", code=code, refused=refused, stage=stage)

    def _refusals(self, sender, recipients, rcpt_replies):
        refused = {r: (c, _text(t)) for r, (c, t) in zip(recipients, rcpt_replies) if c not in (250, 251)}
        return refused

    def _all_refused(self, recipients, refused) -> SendFailure:
        # every recipient refused: the message failed as its (first) recipient did
        first = recipients[0]
        code, text = refused[first]
        failure = self._fail(code, text, "rcpt", f"{first} refused", refused=refused)
        return failure

    def _send_stepwise(self, sender: str, recipients: list[str], data: bytes) -> SendResult:
        smtp = self.smtp
        code, text = smtp.mail(sender, self._mail_options(data))
        if code != 250:
            raise self._fail(code, text, "mail", f"envelope sender {sender!r} refused")
        replies = []
        for rcpt in recipients:
            reply = smtp.rcpt(rcpt)
            replies.append(reply)
            if reply[0] == 421:
                raise self._fail(reply[0], reply[1], "rcpt", f"{rcpt} refused")
        refused = self._refusals(sender, recipients, replies)
        if len(refused) == len(recipients):
            raise self._all_refused(recipients, refused)
        code, text = smtp.data(data)
        if code != 250:
            raise self._fail(code, text, "data", "message refused", refused=refused)
        return SendResult(f"{code} {_text(text)}", refused)

    def _send_pipelined(self, sender: str, recipients: list[str], data: bytes, dot_free: bool = False) -> SendResult:
        smtp = self.smtp
        options = " ".join(self._mail_options(data))
        commands = [f"MAIL FROM:<{sender}>" + (f" {options}" if options else "")]
        commands += [f"RCPT TO:<{r}>" for r in recipients]
        commands.append("DATA")
        smtp.send(("\r\n".join(commands) + "\r\n").encode("utf-8" if self.utf8 else "ascii"))
        mail_code, mail_text = smtp.getreply()
        replies = [smtp.getreply() for _ in recipients]
        data_code, data_text = smtp.getreply()
        if mail_code != 250:
            if data_code == 354:
                self._end_empty_data()
            raise self._fail(mail_code, mail_text, "mail", f"envelope sender {sender!r} refused")
        for code, text in replies:
            if code == 421:
                raise self._fail(code, text, "rcpt", "recipient refused")
        refused = self._refusals(sender, recipients, replies)
        if len(refused) == len(recipients):
            if data_code == 354:
                self._end_empty_data()
            raise self._all_refused(recipients, refused)
        if data_code != 354:
            raise self._fail(data_code, data_text, "data", "DATA refused", refused=refused)
        # `dot_free`: the builder knows no line starts with "." (pipeline.digests.render.Skeleton)
        payload = data if dot_free else quote_periods(data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        smtp.send(payload + b".\r\n")
        code, text = smtp.getreply()
        if code != 250:
            raise self._fail(code, text, "data", "message refused", refused=refused)
        return SendResult(f"{code} {_text(text)}", refused)

    def _end_empty_data(self) -> None:
        # RFC 2920 §3.1: a server that said 354 although no recipient was accepted gets
        # an empty message, which it must refuse.
        self.smtp.send(b".\r\n")
        self.smtp.getreply()


__all__ = ["SMTPSender", "SendResult"]
