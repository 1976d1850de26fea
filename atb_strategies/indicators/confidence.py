"""``MlConfidence``: an ``MlPrediction``'s confidence on its own plot axis."""

from __future__ import annotations

import backtrader as bt


class MlConfidence(bt.Indicator):
    """The ``confidence`` line (0..1) of an ``MlPrediction``, on its own plot axis.

    ``MlPrediction`` plots only its predicted return (about 0.001), which would be flattened by
    a 0..1 line on the same axis; ``MlStrategy`` adds this indicator for each feed so that
    ``cerebro.plot()`` shows the confidence in a subplot below. Add it yourself in a strategy of
    your own: ``MlConfidence(self.prediction)``.
    """

    lines = ("confidence",)
    plotinfo = {
        "subplot": True,
        "plotname": "ML confidence",
        "plotlinevalues": False,
        "plotyticks": [0.0, 0.5, 1.0],
        "plotymargin": 0.05,
    }
    plotlines = {"confidence": {"color": "grey", "_name": "confidence", "_plotvaluetag": False}}

    def _plotlabel(self) -> list[str]:
        return [str(getattr(self.data, "model_key", "") or "")]

    def next(self) -> None:
        self.lines.confidence[0] = self.data.lines.confidence[0]

    def once(self, start: int, end: int) -> None:
        src = self.data.lines.confidence.array
        dst = self.lines.confidence.array
        # backtrader calls this once even for data shorter than the minimum period
        for i in range(start, min(end, len(src), len(dst))):
            dst[i] = src[i]
