"""Settings declared once: defaults < file < environment < flags; bad input named."""

from __future__ import annotations

import pytest

from pipeline.config import SETTINGS, load_settings
from pipeline.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "syndicate.toml"
    p.write_text(text)
    return p


def test_order_defaults_file_env_flags(tmp_path):
    p = write(tmp_path, '[site]\ntitle = "From file"\nbase_url = "https://file.example"\n')
    s = load_settings(
        p,
        env={"SYNDICATE_SITE__BASE_URL": "https://env.example", "SYNDICATE_FEEDS__MAX_ENTRIES": "7"},
        overrides={"web.port": 9000},
    )
    assert s.site.title == "From file" and s.site.base_url == "https://env.example"
    assert s.feeds.max_entries == 7 and s.web.port == 9000 and s.site.language == "en"
    assert s.origins["site.base_url"] == "SYNDICATE_SITE__BASE_URL" and s.origins["site.language"] == "default"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[site]\ntitel = 'x'\n", "unknown setting site.titel"),
        ("[sight]\ntitle = 'x'\n", "unknown section [sight]"),
        ("[feeds]\nmax_entries = 'many'\n", "feeds.max_entries = 'many' is not valid"),
        ("[email]\nbackend = 'pigeon'\n", "not one of maildir, smtp"),
        ("[security]\nsecret_key = 'oops'\n", "is a secret and must not be in a file"),
        ("[site\n", "not valid TOML"),
        ("[[partners]]\nname='p'\nkind='fax'\nurl='https://x'\n", "kind 'fax' is unknown"),
    ],
)
def test_bad_config_names_key_and_fix(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert needle in info.value.message and info.value.hint


def test_unknown_env_variable_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="SYNDICATE_SITE__TITEL names no setting"):
        load_settings(write(tmp_path, ""), env={"SYNDICATE_SITE__TITEL": "x"})


def test_secrets_only_from_env_and_masked(tmp_path):
    s = load_settings(
        write(tmp_path, ""), env={"SYNDICATE_SECRET_KEY": "k" * 40, "SYNDICATE_EMAIL__SMTP_PASSWORD": "pw"}
    )
    assert s.security.secret_key == "k" * 40
    shown = s.effective()
    assert shown["security"]["secret_key"] == "********" and shown["email"]["smtp_password"] == "********"


def test_every_setting_has_help_and_a_typed_default():
    for s in SETTINGS:
        assert s.help.strip(), s
        assert s.type(s.default) == s.default or isinstance(s.default, list)


def test_default_policy_has_the_site_no_politics_rule(tmp_path):
    s = load_settings(write(tmp_path, ""), env={})
    assert [r["name"] for r in s.policy_rules] == ["no-politics"]
