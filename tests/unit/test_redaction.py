"""Credentials never reach a log line: known values and key-like fields are masked."""

from __future__ import annotations

import io
import logging

import pytest

from atb_strategies.exchange.client import create_exchange
from atb_strategies.exchange.redaction import (
    MASK,
    install_redaction,
    redact,
    register_secret,
)

KEY = "k3yVALUEabcdef0123456789"
SECRET = "s3cretVALUE9876543210zyx"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = install_redaction(logging.StreamHandler(stream))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def test_redact_with_registered_secret_masks_every_occurrence():
    register_secret(KEY)
    assert redact(f"a {KEY} b {KEY}") == f"a {MASK} b {MASK}"


def test_redact_with_header_and_signature_masks_values_not_names():
    text = "GET /api/v3/order?symbol=BTCUSDT&signature=abc123 {'X-MBX-APIKEY': 'unknownkey'}"
    out = redact(text, secrets=())
    assert "abc123" not in out and "unknownkey" not in out
    assert "signature=***" in out and "X-MBX-APIKEY': '***" in out
    assert "symbol=BTCUSDT" in out


def test_redact_with_short_value_leaves_text_alone():
    register_secret("ab")
    assert redact("tab and cab") == "tab and cab"


def test_filter_with_args_and_traceback_masks_both(captured):
    logger, stream = captured
    register_secret(SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        logger.exception("request failed with %s", SECRET)
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(MASK) >= 2


def test_ccxt_debug_log_with_keys_from_environment_never_shows_them(captured):
    logger, stream = captured
    env = {"ATB_BINANCE_API_KEY": KEY, "ATB_BINANCE_API_SECRET": SECRET}
    exchange = create_exchange("binance", environ=env)
    # what ccxt logs at DEBUG for a signed request (its own format, with the headers dict)
    signed = exchange.sign("order", ["private"], "POST", {"symbol": "BTCUSDT", "side": "BUY"})
    assert KEY in str(signed["headers"])  # what would leak without the filter
    logger.debug("%s %s, Request: %s %s", "POST", signed["url"], signed["headers"], signed["body"])
    text = stream.getvalue()
    assert KEY not in text and SECRET not in text
    assert "POST" in text and MASK in text
