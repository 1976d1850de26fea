"""The sequence model family: a PyTorch GRU over the window (optional ``torch`` extra).

A one-layer GRU (hidden size 32) reads the ``(sequence_length, n_features)`` window; a linear
head on the last hidden state predicts the standardised next log return. Training: Adam, MSE,
mini-batches of 256 shuffled with a seeded generator, early stopping on the validation part
(later in time than all training bars); a line per epoch with the train and validation loss
(``EarlyStopping``) and, on a terminal, a progress bar over each epoch's batches (an epoch
on a long history takes minutes). Export: ``torch.onnx.export`` (TorchScript exporter,
opset 17) of a wrapper that undoes the target scaling, so the ONNX output is the log return.

Reproducibility: seeded ``torch``/numpy generators, deterministic algorithms, and a fixed
thread count; on CPU two runs agree to rounding (tested within 1e-6).
"""

from __future__ import annotations

import copy
import io
import logging
import multiprocessing
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from atb_strategies.training.early_stopping import EarlyStopping
from atb_strategies.training.family import ModelFamily

log = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "prediction"


class _Net(torch.nn.Module):
    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(n_features, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1, :])


class _Unscaled(torch.nn.Module):
    def __init__(self, net: _Net, y_mean: float, y_std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("y_mean", torch.tensor([y_mean], dtype=torch.float32))
        self.register_buffer("y_std", torch.tensor([y_std], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.y_std + self.y_mean


@dataclass
class FittedGru:
    net: _Net
    y_mean: float
    y_std: float


class GruFamily(ModelFamily[FittedGru]):
    """``gru``: PyTorch GRU(32) + linear head, exported with ``torch.onnx``."""

    name = "gru"
    framework_file = "model.pt"

    def __init__(
        self,
        hidden: int = 32,
        batch_size: int = 256,
        lr: float = 1e-3,
        threads: int = 2,
        progress: bool | None = None,
    ) -> None:
        """``progress``: the per-epoch batch bar; None = on a terminal, in the main process
        only (fold workers stay quiet), True/False = always/never."""
        self.hidden = hidden
        self.progress = progress
        self.batch_size = batch_size
        self.lr = lr
        self.threads = threads

    @property
    def framework(self) -> str:
        return f"torch {torch.__version__}"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
        patience: int = 3,
    ) -> FittedGru:
        torch.set_num_threads(self.threads)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        gen = torch.Generator().manual_seed(seed)
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        yt = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32)).unsqueeze(1)
        xv = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32))
        yv = torch.from_numpy(((y_val - y_mean) / y_std).astype(np.float32)).unsqueeze(1)
        net = _Net(X.shape[2], self.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        loss_fn = torch.nn.MSELoss()
        stopper = EarlyStopping(epochs, patience)
        for epoch in range(1, epochs + 1):
            net.train()
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            with self._bar(epoch, epochs, len(xt)) as bar:
                for i in range(0, len(xt), self.batch_size):
                    idx = order[i : i + self.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(net(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{total / min(len(xt), i + len(idx)):.4f}")
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(xv), yv))
            snapshot = lambda: copy.deepcopy(net.state_dict())  # noqa: E731
            if stopper.record(epoch, total / len(xt), val_loss, snapshot):
                break
        best = stopper.best
        assert best is not None
        net.load_state_dict(best)
        net.eval()
        return FittedGru(net, y_mean, y_std)

    def _bar(self, epoch: int, epochs: int, samples: int) -> tqdm:
        """The progress bar of one epoch (samples trained so far, running train loss)."""
        if self.progress is None:  # a terminal (tqdm checks), in the main process
            main = multiprocessing.current_process().name == "MainProcess"
            disable: bool | None = None if main else True
        else:
            disable = not self.progress
        return tqdm(
            total=samples,
            desc=f"gru epoch {epoch}/{epochs}",
            unit="sample",
            unit_scale=True,
            leave=False,
            disable=disable,
        )

    def predict(self, fitted: FittedGru, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = fitted.net(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
        return out.numpy().reshape(len(X)).astype(np.float64) * fitted.y_std + fitted.y_mean

    def to_onnx(self, fitted: FittedGru, sequence_length: int, n_features: int) -> bytes:
        model = _Unscaled(fitted.net, fitted.y_mean, fitted.y_std).eval()
        example = torch.zeros(2, sequence_length, n_features)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation and batch-size notices
            torch.onnx.export(
                model,
                (example,),
                buf,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        return buf.getvalue()

    def serialize(self, fitted: FittedGru) -> bytes:
        buf = io.BytesIO()
        state: dict[str, Any] = {
            "state_dict": fitted.net.state_dict(),
            "y_mean": fitted.y_mean,
            "y_std": fitted.y_std,
            "hidden": self.hidden,
        }
        torch.save(state, buf)
        return buf.getvalue()
