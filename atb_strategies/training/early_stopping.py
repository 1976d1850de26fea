"""Early stopping on the validation part, shared by every model family."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class EarlyStopping:
    """Keep the snapshot with the lowest validation loss; stop after ``patience`` epochs
    without improvement. Logs one line per epoch (the training progress)."""

    def __init__(self, epochs: int, patience: int) -> None:
        self.epochs = epochs
        self.patience = patience
        self.best: Any = None
        self.best_loss = float("inf")
        self.waited = 0

    def record(
        self, epoch: int, train_loss: float, val_loss: float, snapshot: Callable[[], Any]
    ) -> bool:
        """Note one epoch; ``snapshot()`` is taken when it is the best so far. True = stop."""
        improved = val_loss < self.best_loss - 1e-9
        if improved:
            self.best, self.best_loss, self.waited = snapshot(), val_loss, 0
        else:
            self.waited += 1
        log.info(
            "epoch %d/%d: train loss %.5f, validation loss %.5f%s",
            epoch,
            self.epochs,
            train_loss,
            val_loss,
            " (best)" if improved else "",
        )
        if self.waited >= self.patience:
            log.info("early stop: no improvement for %d epochs", self.patience)
            return True
        return False
