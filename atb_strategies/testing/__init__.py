"""Test doubles for atb_strategies: a loopback Binance spot REST server for the real ccxt client."""
