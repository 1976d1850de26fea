"""Create ccxt exchange clients with safe defaults and configuration from the environment.

``create_exchange("binance")`` returns a synchronous ccxt client with the rate limiter on and
ccxt's own blind retries off. Extra constructor settings come, in order, from the
``ATB_EXCHANGE_CONFIG`` JSON file (a dict, or a dict of dicts keyed by exchange id), then the
``config`` argument. API keys may also come from ``ATB_<EXCHANGE>_API_KEY`` /
``ATB_<EXCHANGE>_API_SECRET``. Credentials are never logged or put in messages.

Credentials are stripped of surrounding whitespace (a key read from a secrets file often ends
with a newline). A key that still holds a character an HTTP header cannot carry (a line break
or another control character, a non-ASCII character) is refused here, before any request, and
the message names where it came from without showing it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ccxt

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.exchange.redaction import register_credentials

log = logging.getLogger(__name__)

#: Credential fields stripped of surrounding whitespace (``privateKey`` may be a PEM block and
#: is left as given).
_STRIPPED = ("apiKey", "secret", "password", "uid", "token", "walletAddress")
#: Credential fields that ccxt sends in HTTP headers: they must be printable ASCII.
_HEADER_FIELDS = ("apiKey", "password", "uid", "token")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def exchange_config(exchange_id: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings for ``exchange_id`` from ``ATB_EXCHANGE_CONFIG`` and ``ATB_<ID>_API_*``."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    path = env.get("ATB_EXCHANGE_CONFIG")
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigurationError(f"ATB_EXCHANGE_CONFIG file {path} is unreadable: {e}.") from e
        if not isinstance(data, dict):
            raise ConfigurationError(f"ATB_EXCHANGE_CONFIG file {path} must hold a JSON object.")
        section = data.get(exchange_id, data) if exchange_id in data else data
        config = _deep_merge(config, section)
    prefix = f"ATB_{exchange_id.upper()}_"
    if env.get(prefix + "API_KEY"):
        config["apiKey"] = env[prefix + "API_KEY"]
    if env.get(prefix + "API_SECRET"):
        config["secret"] = env[prefix + "API_SECRET"]
    return config


def create_exchange(
    exchange_id: str = "binance",
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ccxt.Exchange:
    """A ccxt client for ``exchange_id`` (rate limiter on, ccxt's retries off)."""
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, ccxt.Exchange):
        raise ConfigurationError(
            f"Unknown exchange {exchange_id!r}; use a ccxt exchange id such as 'binance'."
        )
    settings: dict[str, Any] = {
        "enableRateLimit": True,
        "options": {"maxRetriesOnFailure": 0, "fetchCurrencies": False},
    }
    from_env = exchange_config(exchange_id, environ)
    settings = _deep_merge(settings, from_env)
    settings = _deep_merge(settings, dict(config or {}))
    register_credentials(settings)  # as given, before anything can fail
    clean_credentials(settings, lambda field: _source(exchange_id, field, config, environ))
    register_credentials(settings)
    client = cls(settings)
    # ccxt's ``verbose`` output (request headers with the API key) is print()ed; send it
    # through logging instead, where every handler the CLI installs masks credentials
    client.log = lambda *args: log.debug(" ".join(str(a) for a in args))
    return client


def clean_credentials(settings: dict[str, Any], source: Any = None) -> None:
    """Strip the credential fields of ``settings`` (in place) and refuse a header-borne one
    that an HTTP header cannot carry.

    Parameters
    ----------
    settings : dict
        A ccxt client configuration.
    source : callable, optional
        ``source(field) -> str``: where the field came from, for the message.

    Raises
    ------
    ConfigurationError
        Naming the field and its source; the value is never shown.
    """
    for field in _STRIPPED:
        value = settings.get(field)
        if isinstance(value, str):
            settings[field] = value.strip()
    for field in _HEADER_FIELDS:
        value = settings.get(field)
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            where = source(field) if source is not None else "the exchange configuration"
            raise ConfigurationError(
                f"The {field} credential from {where} holds a character an HTTP header cannot "
                "carry (a line break or another control character, or a non-ASCII character) "
                "inside it; nothing was sent. Check that value (it is not shown here)."
            )


def _source(
    exchange_id: str,
    field: str,
    config: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
) -> str:
    """Where credential ``field`` of ``exchange_id`` came from, in words."""
    env = os.environ if environ is None else environ
    if config and field in config:
        return "the config argument"
    names = {"apiKey": "API_KEY", "secret": "API_SECRET"}
    variable = f"ATB_{exchange_id.upper()}_{names.get(field, '')}"
    if field in names and env.get(variable):
        return f"the environment variable {variable}"
    return f"the ATB_EXCHANGE_CONFIG file {env.get('ATB_EXCHANGE_CONFIG')}"


def exchange_now_ms(exchange: ccxt.Exchange) -> int:
    """The exchange's clock in ms: local time corrected by the learned time difference."""
    return int(exchange.milliseconds() - int(exchange.options.get("timeDifference", 0) or 0))
