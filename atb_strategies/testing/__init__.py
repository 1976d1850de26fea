"""Test doubles for atb_strategies: a loopback Binance spot REST server for the real ccxt client.

The server is the package :mod:`atb_strategies.testing.binance`; ``testing.binance_server`` is
its original import path.
"""
