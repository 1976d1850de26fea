"""Hot reload: a streaming ``MlPrediction`` that follows ``latest`` while a session runs.

A live or paper session that did not pin a version checks the registry's ``latest`` pointer
once per bar boundary, before the bar's prediction. The check is cheap: the registry layout
re-reads the pointer only when one of two ``stat`` calls says it changed
(``RegistryLayout.read_latest``). When the pointer names another version:

1. the version is selected like at start (files, checksum, schema, ONNX session, timeframe,
   the feed's columns) and its parity certificate is re-run on this machine;
2. a new ``FeatureStream`` is warmed with every input row the indicator has fed its current
   stream (up to ``HISTORY_ROWS``), so the new model's first prediction equals the one a
   session started on that version would make on the same bars;
3. its outputs must be predictions (``output_problem``): a version whose parity-certificate
   windows or whose first prediction on the warmed features give a non-finite or implausible
   output (``atb_strategies.inference.decode``) is refused;
4. only then does it serve, from this bar on. The switch happens before the bar's prediction,
   between two decisions of the strategy, never inside one.

A version that fails any step is refused once: the old version keeps serving, the reason is
logged once and recorded as a ``"refused"`` event, and that version is not tried again until
the pointer names another one. Each switch or refusal is a ``ModelEvent`` in
``MlPrediction.model_events``; ``atb live`` prints it, puts it to ``notify_store`` and writes an
audit row to the journal.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atb_strategies.exceptions import AtbError
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.certificate import CertificateCheck
from atb_strategies.inference.decode import REJECTED_OUTPUT_REASONS, decode
from atb_strategies.registry.shared import shared_registry

log = logging.getLogger(__name__)

#: Input rows kept to warm a promoted version (over five years of hourly bars).
HISTORY_ROWS = 50_000


@dataclass(frozen=True)
class ModelEvent:
    """The served model changed (``kind="switch"``) or a promoted version was refused
    (``"refused"``), at the bar closing at ``bar`` (ISO time)."""

    kind: str
    bar: str
    symbol: str
    from_key: str
    to_key: str
    reason: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the status output and the log."""
        if self.kind == "switch":
            return f"model switched: {self.from_key} -> {self.to_key} (latest moved)"
        return f"model {self.to_key} refused, {self.from_key} keeps serving: {self.reason}"


class LatestFollower:
    """Where ``latest`` points for one symbol and model type, and which versions were refused.

    Parameters
    ----------
    registry : str or None
        Registry path (None: the configured registry).
    symbol, model_type : str
        The pointer followed.
    serving : str
        The version serving now.
    """

    def __init__(self, registry: str | None, symbol: str, model_type: str, serving: str) -> None:
        self._registry = shared_registry(registry)  # resolved once: the check runs every bar
        self.symbol = symbol
        self.model_type = model_type
        self.serving = serving
        self.refused: dict[str, str] = {}
        self._pointer_problem: str | None = None

    def moved_to(self) -> str | None:
        """The version ``latest`` names when it is neither the serving one nor refused."""
        try:
            name = self._registry.resolve_version(self.symbol, self.model_type)
        except (AtbError, OSError) as e:
            if self._pointer_problem != str(e):  # once per distinct problem
                self._pointer_problem = str(e)
                log.warning(
                    "%s/%s: cannot read 'latest' (%s); %s keeps serving",
                    self.symbol,
                    self.model_type,
                    e,
                    self.serving,
                )
            return None
        self._pointer_problem = None
        if name == self.serving or name in self.refused:
            return None
        return name

    def refuse(self, version: str, reason: str) -> None:
        self.refused[version] = reason


def output_problem(
    bundle: ModelBundle, stream: Any, check: CertificateCheck | None = None
) -> str | None:
    """Why a promoted version's outputs are no predictions, or None when they are.

    Judges, with the rule every prediction path uses (``inference.decode``), the outputs this
    machine gave for its parity certificate's windows (``check``, from ``verify_certificate``:
    outputs that reproduce the recorded ones may still be implausible) and its first prediction
    from ``stream`` (a ready ``FeatureStream`` warmed with the rows seen).
    """
    if check is not None and check.outputs is not None and len(check.outputs):
        runner = bundle.runner
        d = decode(runner.output_spec, check.outputs, None, runner.direction_threshold)
        bad = np.flatnonzero(np.array([r is not None for r in d.reason], dtype=bool))
        if len(bad):
            i = int(bad[0])
            why = REJECTED_OUTPUT_REASONS[str(d.reason[i])]
            return (
                f"{len(bad)} of the {len(check.outputs)} parity-certificate windows give no "
                f"prediction ({why}: window {i} gives {_raw_text(check.outputs[i])})"
            )
    pred = bundle.runner.predict(stream.window().astype(np.float32), stream.context())
    if pred.no_prediction is not None:
        why = REJECTED_OUTPUT_REASONS[pred.no_prediction]
        return f"its first prediction on the bars seen is none ({why}: raw output {pred.raw!r})"
    return None


def _raw_text(raw: np.ndarray) -> str:
    values = np.atleast_1d(np.asarray(raw, dtype=np.float64))
    return repr(float(values[0])) if values.size == 1 else repr(tuple(float(v) for v in values))
