"""``LiveStatus``: one status line per live bar of a running live or paper session."""

from __future__ import annotations

import backtrader as bt


class LiveStatus(bt.Analyzer):
    """One status line per live bar: time, close, prediction, signal, position, P&L, model.

    Bars replayed from the backfill are skipped; only bars delivered while the feed is live
    produce a line.

    Parameters
    ----------
    echo : callable, default print
        Receives each status line (``click.echo``, ``list.append``, a logger method...).
    """

    params = (("echo", print),)

    def start(self) -> None:
        """Remember the broker value at the start, the base of the P&L column."""
        self.start_value = self.strategy.broker.getvalue()

    def next(self) -> None:
        """Emit one line per live data feed the strategy predicts on."""
        strat = self.strategy
        for data, pred in getattr(strat, "predictions", {}).items():
            if data.islive() and data._laststatus != data.LIVE:
                continue
            ret = float(pred.predicted_return[0])
            last = strat.decisions[-1] if strat.decisions else {}
            value = strat.broker.getvalue()
            self.p.echo(
                f"{bt.num2date(data.datetime[0]):%Y-%m-%d %H:%M} {data._name} "
                f"close={float(data.close[0]):.2f} pred={float(pred.predicted_price[0]):.2f} "
                f"ret={ret:+.4%} conf={float(pred.confidence[0]):.2f} "
                f"signal={last.get('signal', '-')} action={last.get('action', '-')} "
                f"pos={strat.getposition(data).size:.6g} value={value:.2f} "
                f"pnl={value - self.start_value:+.2f} model={pred.model_key}"
            )
