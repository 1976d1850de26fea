"""The boundary to exchanges: ccxt error translation, retries, symbols, client creation."""
