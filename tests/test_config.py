"""Settings: TOML plus environment, secrets only by reference, clear errors at start."""

from __future__ import annotations

import dataclasses
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


BASE = '[upstream]\napp_key = "1"\napp_secret = { env = "T_APP_SECRET" }\n'
SELLER = '[[sellers]]\nname = "m"\nstore_id = "1"\naccess_token = { env = "T_APP_SECRET" }\n'


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
        # Values of the wrong type or range, and keys nothing reads (a review found each
        # accepted without a word, and most then failed every call).
        (BASE + '[shim]\nmandatory_scope = "false"\n', "mandatory_scope must be true or false"),
        (BASE + '[shim]\nrate_limit_per_second = "10"\n', "must be a whole number"),
        (BASE + '[shim]\nrate_limit_per_second = -5\n', "rate_limit_per_second must be positive"),
        (BASE + '[shim]\ntrusted_proxy_hops = -1\n', "must not be negative"),
        (BASE + '[shim]\nmax_body_bytes = 0\n', "max_body_bytes must be positive"),
        (BASE + '[shim]\nread_retries = true\n', "read_retries must be a whole number"),
        (BASE + '[shim]\nmandatory_scopes = true\n', "unknown setting(s) mandatory_scopes"),
        (BASE + 'operator_token = "literal"\n', "[upstream]: unknown setting(s) operator_token"),
        (BASE + '[shim]\npublic_url = "shim.example.com"\n', "public_url must be an http(s)"),
        (BASE + '[shim]\nauthorize_url = "javascript:alert(1)"\n', "authorize_url must be"),
        (BASE + '[shim]\nrate_limit_storage = "redis://:hunter2@cache:6379/0"\n',
         "SHIM_RATE_LIMIT_STORAGE"),
        (BASE + '[shim]\ndatabase_url = "postgresql://shim:hunter2@db/shim"\n',
         "holds a password"),
        (BASE + '[shim]\nsellers = 3\n', "unknown setting(s) sellers"),
        (BASE + SELLER + '[[clients]]\nclient_id = "c"\nseller = "m"\n'
         'client_secret = { env = "T_CLIENT_SECRET" }\n'
         f'client_secret_digest = "{credentials.hash_secret("x")}"\n', "not both"),
        (BASE + SELLER + '[[clients]]\nclient_id = "c"\nclient_secret_digest = "scrypt$..."\n'
         'seller = "m"\n', "is not a digest"),
        (BASE + SELLER + '[[clients]]\nclient_id = "c"\nclient_secret = { env = "T_CLIENT_SECRET" }'
         '\nseller = "m"\nenabled = "false"\n', "enabled must be true or false"),
        ('[upstream]\napp_key = "1"\napp_secret = { file = 123 }\n', "never written into"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(tmp_path, body, message):
    with pytest.raises(config.ConfigError) as raised:
        config.load(write(tmp_path, body), env=ENV)
    assert message in str(raised.value)
    assert "app-secret-value" not in str(raised.value)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SHIM_RATE_LIMIT_PER_SECOND", "abc", "SHIM_RATE_LIMIT_PER_SECOND must be a whole number"),
    ("SHIM_TOKEN_TTL_S", "7200.0", "SHIM_TOKEN_TTL_S must be a whole number"),
    ("SHIM_READ_TIMEOUT_S", "soon", "SHIM_READ_TIMEOUT_S must be a number"),
    ("SHIM_MANDATORY_SCOPE", "ture", "SHIM_MANDATORY_SCOPE must be true or false"),
    ("SHIM_BACKGROUND_TASKS", "enabled", "must be true or false"),
    ("SHIM_ENCRYPTION_KEY", "notakey", "SHIM_ENCRYPTION_KEY is not a valid key"),
    ("SHIM_OPERATOR_TOKEN", "x", "SHIM_OPERATOR_TOKEN must be at least 16 characters"),
])
def test_bad_environment_values_are_config_errors(files, variable, value, message):
    with pytest.raises(config.ConfigError) as raised:
        config.load(files, env={**ENV, variable: value})
    assert message in str(raised.value)


def test_environment_booleans_read_both_ways(files):
    settings = config.load(files, env={**ENV, "SHIM_MANDATORY_SCOPE": "off",
                                       "SHIM_BACKGROUND_TASKS": "0"})
    assert settings.mandatory_scope is False and settings.background_tasks is False


@pytest.mark.parametrize(("variable", "nearest"), [
    ("SHIM_RATELIMIT_PER_SECOND", "SHIM_RATE_LIMIT_PER_SECOND"),
    ("SHIM_READ_TIMEOUT", "SHIM_READ_TIMEOUT_S"),
    ("SHIM_SELLERS", None),  # a table, only in the file
    ("SHIM_XYZZY", None),
])
def test_an_unknown_shim_variable_is_refused_with_the_nearest_name(files, variable, nearest):
    with pytest.raises(config.ConfigError) as raised:
        config.load(files, env={**ENV, variable: "5"})
    assert f"unknown environment variable {variable}" in str(raised.value)
    assert (f"did you mean {nearest}?" in str(raised.value)) if nearest else (
        "did you mean" not in str(raised.value))


def test_shim_variables_read_outside_the_settings_are_allowed(tmp_path):
    # The file's own references, the image's and the test suite's variables.
    body = BASE.replace("T_APP_SECRET", "SHIM_ANY_NAME_REFERENCED")
    others = {name: "x" for name in config.OTHER_VARIABLES - {"SHIM_CONFIG"}}
    settings = config.load(write(tmp_path, body),
                           env={**others, "SHIM_ANY_NAME_REFERENCED": "app-secret-value"})
    assert settings.app_secret == "app-secret-value"


@pytest.mark.parametrize(("name", "text", "value"), [
    ("log_level", None, "info"), ("log_level", "DEBUG", "DEBUG"), ("log_level", "error", "error"),
])
def test_one_setting_read_from_the_environment_alone(name, text, value):
    env = {} if text is None else {config.BY_NAME[name].env: text}
    assert config.from_environment(name, env) == value
    with pytest.raises(config.ConfigError, match=f"{config.BY_NAME[name].env} must be one of"):
        config.from_environment(name, {config.BY_NAME[name].env: "loud"})



def test_every_setting_is_declared_once_with_a_meaning():
    names = {spec.name for spec in dataclasses.fields(config.Settings)} - {"sellers", "clients"}
    assert {declared.name for declared in config.DECLARED} == names
    for declared in config.DECLARED:
        assert declared.setting.meaning.endswith("."), declared.name
        assert declared.setting.table in ("upstream", "shim", "serve"), declared.name


def changed(declared):
    """A valid value other than the default."""
    if declared.kind is bool:
        return not declared.default
    if declared.kind in (int, float):
        return declared.default + 1
    if declared.name == "header_case":
        return "canonical"
    if declared.name == "log_level":
        return "debug"
    if declared.name == "front":
        return "none"
    if declared.name.endswith(("_url", "_endpoint")):
        return "https://example.test/2"
    return declared.default + "2"


def toml_value(value):
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


@pytest.mark.parametrize("declared", [d for d in config.DECLARED
                                      if d.default not in (None, dataclasses.MISSING)],
                         ids=lambda declared: declared.name)
def test_each_setting_reads_from_its_table_and_its_variable(tmp_path, declared):
    # A changed value of the right type, written both ways, is read back as that value.
    value = changed(declared)
    line = f"{declared.name} = {toml_value(value)}\n"
    if declared.setting.table == "upstream":
        body = BASE + line
    else:
        body = BASE + f"[{declared.setting.table}]\n" + line
    from_file = config.load(write(tmp_path, body), env=ENV)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    from_env = config.load(write(tmp_path, BASE), env={**ENV, declared.env: text})
    assert getattr(from_file, declared.name) == value == getattr(from_env, declared.name)
