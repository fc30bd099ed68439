"""Settings: TOML plus environment, secrets only by reference, clear errors at start."""

from __future__ import annotations

import textwrap

import pytest

from shim import config, credentials

CONFIG = """
[upstream]
app_key = "100001"
app_secret = { env = "T_APP_SECRET" }

[shim]
header_case = "canonical"
rate_limit_per_second = 5

[[sellers]]
name = "main"
store_id = "414"
access_token = { file = "%(token_file)s" }

[[clients]]
client_id = "erp"
client_secret = { env = "T_CLIENT_SECRET" }
scopes = ["read:product"]
seller = "main"

[[clients]]
client_id = "wms"
client_secret_digest = "%(digest)s"
seller = "main"
"""


@pytest.fixture
def files(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-value\n")
    digest = credentials.hash_secret("wms-secret")
    path = tmp_path / "shim.toml"
    path.write_text(CONFIG % {"token_file": token_file, "digest": digest})
    return path


ENV = {"T_APP_SECRET": "app-secret-value", "T_CLIENT_SECRET": "erp-secret"}


def test_loads_file_and_resolves_secret_references(files):
    settings = config.load(files, env=ENV)
    assert settings.app_key == "100001"
    assert settings.app_secret == "app-secret-value"
    assert settings.header_case == "canonical"
    assert settings.rate_limit_per_second == 5
    assert settings.sellers["main"].access_token == "file-token-value"
    erp, wms = settings.clients["erp"], settings.clients["wms"]
    assert erp.scopes == {"read:product"}
    assert credentials.verify_secret("erp-secret", erp.secret_digest)
    assert credentials.verify_secret("wms-secret", wms.secret_digest)
    assert len(wms.scopes) == 5  # no scopes listed: every scope


def test_environment_overrides_file(files):
    settings = config.load(files, env={**ENV, "SHIM_HEADER_CASE": "lower",
                                       "SHIM_TOKEN_TTL_S": "60", "SHIM_MANDATORY_SCOPE": "true"})
    assert settings.header_case == "lower"
    assert settings.token_ttl_s == 60
    assert settings.mandatory_scope is True


def test_secrets_do_not_show_in_repr(files):
    settings = config.load(files, env=ENV)
    text = repr(settings)
    for secret in ("app-secret-value", "file-token-value", "scrypt$"):
        assert secret not in text


def write(tmp_path, body):
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[upstream]\napp_key = "1"\napp_secret = "literal"\n', "never written into the config"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "MISSING_VAR" }\n',
         "MISSING_VAR is not set"),
        ('[upstream]\napp_key = "1"\napp_secret = { file = "/nonexistent/x" }\n',
         "cannot read /nonexistent/x"),
        ('[upstream]\napp_key = "1"\n', "app_secret is required"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
         '[[sellers]]\nname = "m"\nstore_id = "12ab"\naccess_token = { env = "T_APP_SECRET" }\n',
         "store_id must be digits"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
         '[[clients]]\nclient_id = "c"\nclient_secret = { env = "T_CLIENT_SECRET" }\n'
         'seller = "ghost"\n', "unknown seller 'ghost'"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
         '[[sellers]]\nname = "m"\nstore_id = "1"\naccess_token = { env = "T_APP_SECRET" }\n'
         '[[clients]]\nclient_id = "c"\nclient_secret = { env = "T_CLIENT_SECRET" }\n'
         'seller = "m"\nscopes = ["write:everything"]\n', "unknown scopes"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
         '[shim]\nheader_case = "shouting"\n', "header_case must be one of"),
        ('[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
         'api_url = "ftp://x"\n', "must be an http(s) URL"),
        ("not toml = = =", "cannot read config file"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(tmp_path, body, message):
    with pytest.raises(config.ConfigError) as raised:
        config.load(write(tmp_path, body), env=ENV)
    assert message in str(raised.value)
    assert "app-secret-value" not in str(raised.value)
