"""``lightgbm``: gradient-boosted trees on the flattened window (LightGBM, exported by onnxmltools).

Why: trees find non-linear structure (volatility regimes, thresholds) a linear model cannot, and
LightGBM trains thousands of windows in seconds on 2 cores, deterministically for a seed
(``deterministic=True``, one thread per model so parallel folds do not oversubscribe).
Boosting stops early on the validation part (later in time than every training bar): rounds
are added while the validation MSE improves, at most ``MAX_ROUNDS``, and the model keeps the
best round. The target is standardised with train-only mean and std for fitting; the exported
graph undoes it. ``onnxmltools`` converts the booster to a ``TreeEnsembleRegressor``; the
thresholds are compared in float32 there, exactly like the float32 windows the bundle is fed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from atb_strategies.training.family import ModelFamily
from atb_strategies.training.onnx_graph import wrap_flat
from atb_strategies.training.ridge import flatten

#: Most boosting rounds; early stopping usually ends far sooner on returns.
MAX_ROUNDS = 500
#: Rounds without validation improvement before stopping.
PATIENCE = 30


@dataclass
class FittedBoosting:
    model: Any
    y_mean: float
    y_std: float
    best_iteration: int


class LightgbmFamily(ModelFamily[FittedBoosting]):
    """``lightgbm``: a shallow, strongly regularised LGBMRegressor, early-stopped on validation."""

    name = "lightgbm"
    framework_file = "model.pkl"

    def __init__(
        self, num_leaves: int = 15, learning_rate: float = 0.03, min_child_samples: int = 100
    ) -> None:
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.min_child_samples = min_child_samples

    @property
    def framework(self) -> str:
        import lightgbm
        import onnxmltools

        return f"lightgbm {lightgbm.__version__} / onnxmltools {onnxmltools.__version__}"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> FittedBoosting:
        """Boost on the train part, stopping when the validation MSE stops improving.

        ``epochs`` does not apply (rounds are bounded by ``MAX_ROUNDS`` and early stopping).
        """
        import lightgbm

        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        model = lightgbm.LGBMRegressor(
            n_estimators=MAX_ROUNDS,
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            min_child_samples=self.min_child_samples,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            random_state=seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=1,
            verbose=-1,
        )
        model.fit(
            flatten(X),
            (y - y_mean) / y_std,
            eval_X=(flatten(X_val),),
            eval_y=((y_val - y_mean) / y_std,),
            eval_metric="l2",
            callbacks=[lightgbm.early_stopping(PATIENCE, verbose=False)],
        )
        return FittedBoosting(model, y_mean, y_std, int(model.best_iteration_ or MAX_ROUNDS))

    def predict(self, fitted: FittedBoosting, X: np.ndarray) -> np.ndarray:
        """Framework predictions (float64 log returns) for float32 windows."""
        raw = fitted.model.predict(flatten(X), num_iteration=fitted.best_iteration)
        return np.asarray(raw, dtype=np.float64) * fitted.y_std + fitted.y_mean

    def to_onnx(self, fitted: FittedBoosting, sequence_length: int, n_features: int) -> bytes:
        """ONNX: [N, seq, f] -> Flatten -> TreeEnsembleRegressor -> * y_std + y_mean -> [N, 1]."""
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        # onnxmltools dumps the booster, which dumps up to its best iteration (early stopping)
        inner = convert_lightgbm(
            fitted.model,
            initial_types=[("flat", FloatTensorType([None, sequence_length * n_features]))],
            target_opset=15,  # the highest onnxmltools 1.16 supports; the wrapper adds 17
            zipmap=False,
        )
        return wrap_flat(
            inner,
            sequence_length,
            n_features,
            scale=fitted.y_std,
            offset=fitted.y_mean,
            name="atb_lightgbm",
        )

    def serialize(self, fitted: FittedBoosting) -> bytes:
        """The pickled LightGBM model with its target scaling and best iteration."""
        return pickle.dumps(fitted, protocol=5)

    def selection(self, fitted: FittedBoosting) -> dict[str, Any]:
        """What early stopping chose (lineage)."""
        return {"best_iteration": fitted.best_iteration, "max_rounds": MAX_ROUNDS}
