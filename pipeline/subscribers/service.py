"""The module the subscribers stage was before it was split by responsibility (issue 17).

Kept only so that code written against ``pipeline.subscribers.service`` still imports
while branches merge: use ``pipeline.subscribers`` (the package's API) or its modules
(see the package docstring). Importing this loads every module, the email kinds too.
"""

from __future__ import annotations

from pipeline.subscribers import *  # noqa: F401,F403
from pipeline.subscribers import __all__  # noqa: F401
from pipeline.subscribers.fields import TOPIC_RE as _TOPIC_RE  # noqa: F401
from pipeline.subscribers.links import confirm_token as _confirm_token  # noqa: F401
