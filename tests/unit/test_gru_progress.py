"""The GRU shows progress (issue 22 item 5): a line per epoch with the train and validation
loss, and, on a terminal, a bar over each epoch's batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("torch")

from atb_strategies.training.gru import GruFamily


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 8, 3)).astype(np.float32), rng.normal(scale=0.01, size=n)


@pytest.mark.parametrize(("progress", "bars"), [(True, True), (False, False), (None, False)])
def test_gru_fit_logs_every_epoch_and_draws_a_bar_only_when_asked_or_on_a_terminal(
    progress, bars, capsys, caplog
):
    X, y = _data(600)
    with caplog.at_level(logging.INFO, logger="atb_strategies.training"):
        GruFamily(hidden=4, batch_size=128, progress=progress).fit(
            X[:500], y[:500], X[500:], y[500:], seed=0, epochs=2, patience=5
        )
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("train loss" in m and "validation loss" in m for m in epochs)
    err = capsys.readouterr().err
    assert ("gru epoch 1/2" in err and "gru epoch 2/2" in err) is bars
    if bars:
        assert "500/500" in err  # every training sample counted
