"""Start-up (issue 15 item 4): `syndicate --help` and `import pipeline.cli` load no heavy
library; each command imports what it needs when it runs. Checked by the modules
loaded, never by time."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("sqlalchemy", "jinja2", "requests", "alembic", "feedgen", "apscheduler", "lxml", "uvicorn", "fastapi")

PROBE = f"""
import json, sys
import pipeline.cli
loaded_on_import = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
try:
    pipeline.cli.main(["--help"])
except SystemExit:
    pass
loaded_on_help = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps([loaded_on_import, loaded_on_help]))
"""


def _probe() -> tuple[list[str], list[str], str]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    *help_lines, last = out.stdout.strip().splitlines()
    on_import, on_help = json.loads(last)
    return on_import, on_help, "\n".join(help_lines)


def test_import_and_help_load_no_heavy_library():
    on_import, on_help, help_text = _probe()
    assert on_import == [], f"`import pipeline.cli` loads {on_import}"
    assert on_help == [], f"`syndicate --help` loads {on_help}"
    # and the help still lists every command group
    for command in (
        "init",
        "run",
        "ingest",
        "approve",
        "build",
        "digest",
        "deliver",
        "subscribers",
        "partners",
        "jobs",
        "sources",
        "serve",
        "status",
    ):
        assert f"  {command} " in help_text or f"  {command}\n" in help_text, command


def test_a_sender_without_dkim_does_not_load_dkimpy(tmp_path):
    """`deliver` and `serve` build an email channel; only one that signs (email.dkim_selector
    set) needs dkimpy, which loads dnspython (about 60 ms of every start)."""
    config = tmp_path / "syndicate.toml"
    config.write_text('[site]\ntitle = "T"\nbase_url = "https://news.example.com"\n', encoding="utf-8")
    probe = (
        "import json, sys\n"
        "from pipeline.config import load_settings\n"
        "import pipeline.delivery.worker, pipeline.delivery.email.channel\n"
        "from pipeline.delivery.email.dkim import signer_from_settings\n"
        f"assert signer_from_settings(load_settings({str(config)!r}, env={{}})) is None\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dkim', 'dns'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
