"""Secure by default: short secrets and bad proxy lists are refused in one line, and `serve`
will not start a web-page key without shopper tokens."""

import os
import subprocess
import sys

import pytest

from services.errors import UserError
from services.recommender.http.guards import check_serving
from services.settings import load_settings

LONG = "a-secret-of-enough-chars"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api_keys", "short"),
        ("api_keys", f"{LONG},short"),
        ("publishable_keys", "pk-short"),
        ("shopper_token_secret", "fifteen-chars!!"),
        ("state_secret", "test-secret"),
    ],
)
def test_secrets_shorter_than_16_characters_are_refused_in_one_line(name, value):
    with pytest.raises(UserError) as refused:
        load_settings(**{name: value})
    message = str(refused.value)
    assert f"SHELFSIGHT_{name.upper()}" in message and "at least 16 characters" in message and "\n" not in message
    echoed = message.replace("too short", "")
    assert not any(part in echoed for part in value.split(",")), "a secret is never echoed"


def test_long_enough_secrets_are_taken():
    settings = load_settings(api_keys=f"{LONG},{LONG}-2", publishable_keys=f"pk-{LONG}", shopper_token_secret=LONG, state_secret="x" * 16)
    assert settings.shopper_token_secret is not None and settings.shopper_token_secret.get_secret_value() == LONG


def test_trusted_proxies_must_be_addresses_or_networks():
    assert load_settings(trusted_proxies="10.0.0.0/8, 192.168.1.7, 2001:db8::/32").trusted_proxies
    with pytest.raises(UserError, match=r"SHELFSIGHT_TRUSTED_PROXIES: .*'proxy\.internal' is not an IP address or CIDR"):
        load_settings(trusted_proxies="10.0.0.0/8,proxy.internal")


def test_publishable_keys_need_shopper_tokens_to_serve():
    with pytest.raises(UserError, match="set it to a random secret of at least 16 characters"):
        check_serving(load_settings(publishable_keys=f"pk-{LONG}"))
    with pytest.raises(UserError, match="set it to a random secret"):  # an empty secret is none, not an empty HMAC key
        check_serving(load_settings(publishable_keys=f"pk-{LONG}", shopper_token_secret=""))
    assert load_settings(shopper_token_secret="").shopper_token_secret is None
    check_serving(load_settings(publishable_keys=f"pk-{LONG}", shopper_token_secret=LONG))  # as `make demo` starts it
    check_serving(load_settings(api_keys=LONG))  # a back end only: nothing in a web page
    with pytest.raises(UserError, match="SHELFSIGHT_API_OPS_PORT is the API port"):
        check_serving(load_settings(api_port=8123, api_ops_port=8123))


def test_serve_refuses_to_start_open_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSIGHT_")}
    env |= {
        "SHELFSIGHT_PUBLISHABLE_KEYS": f"pk-{LONG}",
        "SHELFSIGHT_CACHE_DIR": str(tmp_path),
        "SHELFSIGHT_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }  # refused before it would look for a broker
    result = subprocess.run([sys.executable, "-m", "services.cli", "serve"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "SHELFSIGHT_SHOPPER_TOKEN_SECRET is not" in result.stderr, result.stderr
