"""Partner push: every approved article, once per revision, to partner sites, signed.

- `events`    the `partners` stage: approved revisions and retractions -> outbox rows
- `webhook`   Standard Webhooks pusher (channel "webhook")
- `micropub`  Micropub pusher (channel "micropub")
- `channel`   what both share: partner state gates, answer -> outcome, circuit breaker
- `http`      timeouts, no redirects, the SSRF guard, answer classification, backoff
- `signing`   Standard Webhooks signatures (also used by the test partner server)
- `state`     partner_state / partner_attempts / partner_syndications
- `ops`       list, status, test, retry, replay, resume (the CLI is a thin adapter)

Partners of kind "websub" are hubs: pipeline.site.websub pings them after a feed build;
this package only lists them. The "webhook" and "micropub" channels are declared as
entry points (`syndicate.channels` in pyproject.toml).
"""

from __future__ import annotations

from pipeline.partners.events import partners_stage, queue_partner_events
from pipeline.partners.micropub import MicropubChannel
from pipeline.partners.webhook import WebhookChannel

__all__ = ["partners_stage", "queue_partner_events", "WebhookChannel", "MicropubChannel"]
