"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, in a thread.

It records every message it accepts, per recipient, and can be told how to answer.
Use it as a context manager (or call start()/stop()):

    from tests.smtp_server import SMTPTestServer

    with SMTPTestServer() as smtp:                 # plain SMTP, no STARTTLS offered
        settings: email.smtp_host = smtp.host, email.smtp_port = smtp.port,
                  email.smtp_security = "none"
        ... send ...
        smtp.messages                # [Received(mail_from, rcpt_tos, data, session)], in order
        smtp.received_by("a@x.org")  # [Received, ...] that went to this recipient
        smtp.counts()                # {recipient (lower-case): number of messages}
        smtp.connections             # SMTP sessions opened since start() or reset()

Telling it how to answer (rules are tried in the order given; `times=None` is
forever, `times=1` only the next matching command):

    smtp.answer("mail", "421 4.7.0 Try again later", times=1)
    smtp.answer("rcpt", "550 5.1.1 No such user", recipient="gone@x.org")
    smtp.answer("rcpt", "452 4.2.2 Mailbox full")
    smtp.answer("data", "451 4.3.0 Temporary failure")
    smtp.answer("data", "554 5.7.1 Message rejected by policy")
    smtp.refuse("b@x.org")                     # = answer("rcpt", "550 5.1.1 ...", recipient=...)
    smtp.drop_during_data(times=1)             # the message arrives; the connection is cut
                                               # before the reply, and nothing is recorded
    smtp.stall(seconds=5, at="data", times=1)  # no answer for `seconds` (then 451), nothing recorded
    smtp.slow("x@y.org", seconds=3)            # RCPT for x@y.org answered (250) after 3 s:
                                               # a slow recipient's server
    smtp.data_delay = 0.01                     # every DATA answer 10 ms late (a slow server)
    smtp.reset()                               # forget messages, rules and counters

PIPELINING (RFC 2920), the client's default send path (issue 16, item 16):

    SMTPTestServer(pipelining=True)            # advertises PIPELINING in its EHLO answer;
                                               # the `smtp_server` fixtures run both ways

TLS and AUTH:

    SMTPTestServer(starttls=True)              # offers STARTTLS with a throwaway self-signed
                                               # certificate for 127.0.0.1; give the client
                                               # smtp.ca_file to trust it
    SMTPTestServer(implicit_tls=True)          # TLS from the first byte (port-465 style)
    SMTPTestServer(starttls=True, auth=("user", "secret"))  # AUTH PLAIN/LOGIN required

The server is strict like a real one: a line over 998 characters (what bare-LF data
looks like to it) is answered with 500 (SMTP-7).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

__all__ = ["SMTPTestServer", "Received", "tls_files"]

_TLS: dict[str, Path] = {}


def tls_files() -> tuple[Path, Path]:
    """(cert.pem, key.pem) of a self-signed certificate for 127.0.0.1 / localhost,
    made once per test process with the openssl command."""
    if not _TLS:
        folder = Path(tempfile.mkdtemp(prefix="smtp-test-tls-"))
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(folder / "key.pem"),
                "-out",
                str(folder / "cert.pem"),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
            check=True,
            capture_output=True,
        )
        _TLS["cert"], _TLS["key"] = folder / "cert.pem", folder / "key.pem"
    return _TLS["cert"], _TLS["key"]


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, after un-dot-stuffing; CRLF line ends if the client sent them
    session: int  # which connection (1, 2, ...)

    @property
    def has_bare_lf(self) -> bool:
        return self.data.count(b"\n") != self.data.count(b"\r\n")


@dataclasses.dataclass
class _Rule:
    stage: str  # mail | rcpt | data
    reply: str | None  # None: drop or stall
    recipient: str | None = None
    times: int | None = None
    action: str = "reply"  # reply | drop | stall | delay
    seconds: float = 0.0


class _CountingSMTP(SMTP):
    def __init__(self, *args, owner: SMTPTestServer, **kwargs):
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._session_no = 0

    def connection_made(self, transport):
        self._session_no = self._owner._opened()
        super().connection_made(transport)


class _Controller(Controller):
    def __init__(self, owner: SMTPTestServer, *args, **kwargs):
        self._owner = owner
        super().__init__(*args, **kwargs)

    def factory(self):
        return _CountingSMTP(self.handler, owner=self._owner, **self.SMTP_kwargs)

    def _trigger_server(self):
        # bound to port 0: learn the real port before aiosmtpd connects to itself
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    def __init__(self, owner: SMTPTestServer):
        self.owner = owner

    async def _apply(self, server, rule: _Rule | None) -> str | None:
        if rule is None:
            return None
        if rule.action == "stall":
            await asyncio.sleep(rule.seconds)
            return "451 4.4.2 Timeout (test server stalled)"
        if rule.action == "delay":
            await asyncio.sleep(rule.seconds)
            return None
        if rule.action == "drop":
            server.transport.abort()
            return "421 4.4.2 Connection dropped (test server)"
        return rule.reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.owner.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = await self._apply(server, self.owner._take("mail", address))
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = await self._apply(server, self.owner._take("rcpt", address))
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        reply = await self._apply(server, self.owner._take("data", None))
        if reply:
            return reply
        data = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode("utf-8")
        number = self.owner._record(
            envelope.mail_from, list(envelope.rcpt_tos), data, getattr(server, "_session_no", 0)
        )
        return f"250 2.0.0 OK queued as T{number}"


class SMTPTestServer:
    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        hostname: str = "127.0.0.1",
        pipelining: bool = False,
    ):
        self.host = hostname
        self.pipelining = pipelining
        self.port = 0
        self.ca_file: str | None = None
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.messages: list[Received] = []
        self.connections = 0
        self._counting = False
        self.auth = auth
        self.logins: list[str] = []
        self.data_delay = 0.0  # seconds before every DATA answer: a slow server
        kwargs: dict = {"data_size_limit": 50_000_000, "decode_data": False, "enable_SMTPUTF8": False}
        ssl_context = None
        if starttls or implicit_tls:
            cert, key = tls_files()
            self.ca_file = str(cert)
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(cert, key)
            if starttls:
                kwargs["tls_context"] = server_ctx
                kwargs["require_starttls"] = False
            else:
                ssl_context = server_ctx
        if auth:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = bool(starttls or implicit_tls)
        self._controller = _Controller(
            self,
            _Handler(self),
            hostname=hostname,
            port=0,
            ssl_context=ssl_context,
            server_hostname="smtp.test",
            **kwargs,
        )

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> SMTPTestServer:
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            self.connections = 0
            self._counting = True
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- rules ---------------------------------------------------------------------

    def answer(self, stage: str, reply: str, *, recipient: str | None = None, times: int | None = None) -> None:
        """Answer `reply` (e.g. "451 4.3.0 Try later") to the next MAIL/RCPT/DATA."""
        if stage not in ("mail", "rcpt", "data"):
            raise ValueError(stage)
        with self._lock:
            self._rules.append(_Rule(stage, reply, recipient.lower() if recipient else None, times))

    def refuse(self, recipient: str, reply: str = "550 5.1.1 No such user here", times: int | None = None) -> None:
        self.answer("rcpt", reply, recipient=recipient, times=times)

    def drop_during_data(self, times: int | None = 1) -> None:
        with self._lock:
            self._rules.append(_Rule("data", None, None, times, action="drop"))

    def stall(self, seconds: float, *, at: str = "data", times: int | None = 1) -> None:
        with self._lock:
            self._rules.append(_Rule(at, None, None, times, action="stall", seconds=seconds))

    def slow(self, recipient: str, seconds: float, times: int | None = None) -> None:
        with self._lock:
            self._rules.append(_Rule("rcpt", None, recipient.lower(), times, action="delay", seconds=seconds))

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self.messages.clear()
            self.connections = 0
            self.logins.clear()

    # --- what arrived --------------------------------------------------------------

    def received_by(self, recipient: str) -> list[Received]:
        recipient = recipient.lower()
        with self._lock:
            return [m for m in self.messages if recipient in (r.lower() for r in m.rcpt_tos)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for m in self.messages:
                for r in m.rcpt_tos:
                    out[r.lower()] = out.get(r.lower(), 0) + 1
        return out

    # --- internals (called from the server thread) -----------------------------------

    def _opened(self) -> int:
        with self._lock:
            if self._counting:
                self.connections += 1
            return self.connections

    def _take(self, stage: str, address: str | None) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.stage != stage or rule.times == 0:
                    continue
                if rule.recipient and (address or "").lower() != rule.recipient:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    def _record(self, mail_from: str, rcpt_tos: list[str], data: bytes, session: int) -> int:
        with self._lock:
            self.messages.append(Received(mail_from, rcpt_tos, data, session))
            return len(self.messages)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            ok = (auth_data.login.decode(), auth_data.password.decode()) == tuple(self.auth)
            if ok:
                with self._lock:
                    self.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)
        return AuthResult(success=False, handled=False)
