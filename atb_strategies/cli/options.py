"""Options and value types shared by several ``atb`` commands, defined once.

Numeric options carry their valid range (``click.FloatRange``/``IntRange``), dates a type that
parses them, so a bad value fails before any work with one line naming the flag.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import ConfigurationError

registry_option = click.option(
    "--registry",
    "registry_path",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Registry root (default: $ATB_MODEL_REGISTRY_PATH, the config file, or ./models).",
)

#: Starting cash: a positive amount of the quote currency.
CASH = click.FloatRange(min=0, min_open=True)
#: A fee per trade as a fraction (0.001 = 0.1 %); 10 % or more is surely a typo.
COMMISSION = click.FloatRange(min=0, max=0.1, max_open=True)
#: A fraction in [0, 1).
FRACTION = click.FloatRange(min=0, max=1, max_open=True)
#: A count of at least one.
POSITIVE_INT = click.IntRange(min=1)

#: ``--sequence-length`` of ``atb train model`` and ``atb train walk-forward``: at least 2 bars
#: (``TrainingConfig`` refuses 1); the default follows the timeframe.
sequence_length_option = click.option(
    "--sequence-length",
    type=click.IntRange(min=2),
    default=None,
    help="Bars in each input window, at least 2 [default: 120 for intraday timeframes, 30 for "
    "1d and longer].",
)


class LimitType(click.ParamType):
    """A loss limit: a fraction in (0, 1), or ``off``/``none`` to disable it (None)."""

    name = "fraction|off"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a fraction (0.05 = 5 %) nor 'off'.", param, ctx)
        if not 0 < number < 1:
            self.fail(
                f"{number!r} is not in (0, 1); use a fraction (0.05 = 5 %) or 'off'.", param, ctx
            )
        return number


LIMIT = LimitType()


class DateType(click.ParamType):
    """A UTC date or time (``2024-10-01`` or ``2024-10-01T12:00``), kept as the string given."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None:
            return None
        import pandas as pd

        try:
            pd.Timestamp(str(value))
        except (ValueError, TypeError):
            self.fail(
                f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC).", param, ctx
            )
        return str(value)


DATE = DateType()

_PERIOD_FLAGS = ("--start-date", "--end-date")


def check_dates(start_date: str | None, end_date: str | None) -> None:
    """Refuse ``--end-date`` before ``--start-date`` before any work (one line naming both)."""
    from atb_strategies.data.periods import check_period

    check_period(start_date, end_date, names=_PERIOD_FLAGS)


def check_dates_in_data(
    frame: Any, start_date: str | None, end_date: str | None, names: tuple[str, str] = _PERIOD_FLAGS
) -> None:
    """Refuse a period holding none of the loaded candles (before the model is loaded), naming
    the flag at fault and the range the candles cover."""
    from atb_strategies.data.periods import check_period_in_data

    what = frame.attrs.get("source") or "the candles"
    check_period_in_data(frame.index, start_date, end_date, what=str(what), names=names)


def resolved_timeframe(timeframe: str | None, data: Path | None, frame: Any) -> str:
    """The ``--timeframe`` given, else the candles' own (``--data``: said in one line on
    stderr), else 1h."""
    if timeframe is not None:
        return timeframe
    own = frame.attrs.get("timeframe") or "1h"
    if data is not None:
        click.echo(
            f"timeframe: {own}, the spacing of the candles in --data {data} (pass --timeframe to "
            "choose another)",
            err=True,
        )
    return str(own)


def load_config(registry_path: Path | None) -> PredictionConfig:
    """The configuration, with ``--registry`` overriding the registry path."""
    config = PredictionConfig.from_config_manager()
    if registry_path is not None:
        config = config.with_overrides(model_registry_path=registry_path)
    return config


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Candle cache (default: $ATB_DATA_DIR or ./data).",
)


def training_data_options(f: Any) -> Any:
    """The candle options of ``atb train model`` and ``atb train walk-forward``: --timeframe,
    --start-date, --end-date, --model-type, --data, --synthetic, --download, --exchange,
    --data-dir, --bars, --sentiment, --synthetic-sentiment."""
    options = [
        click.option(
            "--timeframe",
            default=None,
            help="Candle size, e.g. 1h or 1d [the --data file's own spacing, else 1h].",
        ),
        click.option("--start-date", type=DATE, help="First bar used (UTC date or time)."),
        click.option(
            "--end-date", type=DATE, help="Last bar used (a date includes that whole day)."
        ),
        click.option(
            "--model-type",
            type=click.Choice(["basic", "sentiment"]),
            default="basic",
            show_default=True,
            help="basic: candles only; sentiment: candles and a sentiment index.",
        ),
        click.option(
            "--data",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            help="Candles file (CSV, parquet, feather).",
        ),
        click.option(
            "--synthetic", is_flag=True, help="Train on the seeded synthetic market (demo)."
        ),
        click.option(
            "--download",
            is_flag=True,
            help="Without --data: fetch missing candles from --exchange into the cache first.",
        ),
        click.option(
            "--exchange",
            "exchange_id",
            default="binance",
            show_default=True,
            help="ccxt exchange id for --download.",
        ),
        data_dir_option,
        click.option(
            "--bars", type=POSITIVE_INT, default=18000, show_default=True, help="Synthetic bars."
        ),
        click.option(
            "--sentiment",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            help="Sentiment CSV (timestamp, value) for --model-type sentiment.",
        ),
        click.option(
            "--synthetic-sentiment",
            is_flag=True,
            help="Use the synthetic demo sentiment index (not real sentiment).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# The market's trading calendar and a Yahoo file's close (`atb train model`): see
# atb_strategies.features.calendar and data.loaders.
calendar_option = click.option(
    "--calendar",
    default="24/7",
    show_default=True,
    help="Trading calendar: 24/7, weekdays, an exchange code (XNYS, XLON, CMES; needs "
    "atb-strategies[calendar]) or csv:PATH of sessions. A closure is not a gap.",
)
adjusted_option = click.option(
    "--adjusted",
    is_flag=True,
    help="Use the file's Adj Close (Yahoo CSV), open/high/low scaled by the same ratio.",
)
data_tz_option = click.option(
    "--data-tz",
    "tz",
    default=None,
    help="Time zone of --data times without an offset (e.g. America/New_York) [UTC].",
)


# The options `atb backtest` and `atb sweep` share, defined once (same names, types, help).
bars_option = click.option(
    "--bars", type=POSITIVE_INT, default=6000, show_default=True, help="Synthetic bars."
)
seed_option = click.option("--seed", default=0, show_default=True, help="Synthetic seed.")
sentiment_options = [
    click.option(
        "--sentiment",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="Sentiment CSV (timestamp, value) for sentiment models.",
    ),
    click.option("--synthetic-sentiment", is_flag=True, help="Attach the synthetic demo index."),
]
period_options = [
    click.option(
        "--start-date", type=DATE, help="First traded bar (earlier bars warm the model up)."
    ),
    click.option("--end-date", type=DATE, help="Last bar."),
]
model_type_option = click.option(
    "--model-type", default=None, help="Registry model type (default per strategy)."
)
cash_option = click.option(
    "--cash", type=CASH, default=10_000.0, show_default=True, help="Starting cash (quote currency)."
)
commission_option = click.option(
    "--commission", type=COMMISSION, default=0.001, show_default=True, help="Fraction per trade."
)
slippage_option = click.option(
    "--slippage",
    "slippage_bps",
    type=click.FloatRange(min=0, max=1000),
    default=0.0,
    show_default=True,
    help="Basis points against every market fill.",
)


def backtest_options(f: Any) -> Any:
    """--bars, --seed, --sentiment, --synthetic-sentiment, --start-date, --end-date,
    --model-type (shared by ``atb backtest`` and ``atb sweep``)."""
    for option in reversed(
        [bars_option, seed_option, *sentiment_options, *period_options, model_type_option]
    ):
        f = option(f)
    return f


def money_options(f: Any) -> Any:
    """--cash, --commission, --slippage (shared by ``atb backtest`` and ``atb sweep``)."""
    for option in reversed([cash_option, commission_option, slippage_option]):
        f = option(f)
    return f


_ACTIONS = click.Choice(["warn", "no_entries", "flatten"])
guard_option_list = [
    click.option(
        "--max-model-age",
        default=None,
        metavar="DURATION",
        help="Model-age guard: e.g. 30d after the last bar the model was trained on.",
    ),
    click.option(
        "--age-action", type=_ACTIONS, default="warn", show_default=True, help="When too old."
    ),
    click.option(
        "--drift-action",
        type=_ACTIONS,
        default=None,
        help="Drift guard: what a drifted input does (default: drift not computed).",
    ),
    click.option(
        "--drift-window",
        type=click.IntRange(min=2),
        default=168,
        show_default=True,
        help="Bars in the drift window.",
    ),
    click.option(
        "--drift-threshold",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="One PSI threshold for all features (default: calibrated per feature).",
    ),
]


def guard_options(f: Any) -> Any:
    """--max-model-age, --age-action, --drift-action, --drift-window, --drift-threshold
    (``atb backtest`` and ``atb live``; see ``atb_strategies.strategies.guards``)."""
    for option in reversed(guard_option_list):
        f = option(f)
    return f


def guard_params(
    max_model_age: str | None,
    age_action: str,
    drift_action: str | None,
    drift_window: int,
    drift_threshold: float | None,
) -> dict[str, Any]:
    """The strategy parameters of the guard options (only those set).

    Raises ``ConfigurationError`` for a drift setting without ``--drift-action`` (it would do
    nothing)."""
    if drift_action is None and (drift_window != 168 or drift_threshold is not None):
        raise ConfigurationError(
            "--drift-window and --drift-threshold set the drift guard, which is off: add "
            "--drift-action warn (or no_entries, flatten)."
        )
    if max_model_age is None and age_action != "warn":
        raise ConfigurationError("--age-action sets the model-age guard: add --max-model-age 30d.")
    params: dict[str, Any] = {}
    if max_model_age is not None:
        params.update(max_model_age=max_model_age, age_action=age_action)
    if drift_action is not None:
        params.update(
            drift_action=drift_action, drift_window=drift_window, drift_threshold=drift_threshold
        )
    return params


# The names of training.family.FAMILIES and training.recipes.FEATURE_SETS, spelled out so that
# `atb --help` does not import the training stack (tests/unit/test_cli_startup.py); a unit test
# (test_cli_choices_match_the_training_registries) keeps them equal.
ARCHITECTURES = ("mlp", "gru", "ridge", "lightgbm", "mlp_ensemble", "auto")
RECIPES = ("price", "lags")


def architecture_option(f: Any) -> Any:
    """``--architecture`` of ``atb train model`` and ``atb train walk-forward``: a registered
    model family (``training.family.FAMILIES``)."""
    return click.option(
        "--architecture",
        type=click.Choice(ARCHITECTURES),
        default="mlp",
        show_default=True,
        help="Model family; auto picks family and regularisation on the validation part.",
    )(f)


def recipe_option(f: Any) -> Any:
    """``--recipe``: the feature set (``training.recipes.FEATURE_SETS``); default per family."""
    return click.option(
        "--recipe",
        type=click.Choice(RECIPES),
        default=None,
        help="Features: price (window-normalised) or lags (lagged returns, volatility, volume); "
        "default lags for ridge/lightgbm/auto, price for mlp/gru.",
    )(f)


_SYMBOL = re.compile(r"^[A-Za-z0-9._-]+$")


def symbol_list(symbol: str, symbols: str | None, data: tuple[str, ...]) -> list[str]:
    """``--symbols A,B``, else the symbols of ``--data SYMBOL=FILE``, else ``--symbol``."""
    if symbols:
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        if not names or len(set(names)) != len(names):
            raise click.BadParameter(
                f"needs distinct symbols separated by commas; got {symbols!r}.",
                param_hint="--symbols",
            )
        return names
    named = [d.partition("=")[0] for d in data if is_named_data(d)]
    return named or [symbol]


def is_named_data(entry: str) -> bool:
    """``SYMBOL=FILE`` rather than a file path (which may itself hold a '=')."""
    name, sep, _ = entry.partition("=")
    return bool(sep) and bool(_SYMBOL.match(name)) and not Path(entry).exists()


def data_files(data: tuple[str, ...], symbols: list[str]) -> dict[str, Path]:
    """Symbol -> candles file from ``--data FILE`` (one symbol) or ``--data SYMBOL=FILE``."""
    if not data:
        return {}
    files: dict[str, Path] = {}
    for entry in data:
        if is_named_data(entry):
            name, _, path = entry.partition("=")
            files[name] = Path(path)
        elif len(data) == 1 and len(symbols) == 1:
            files[symbols[0]] = Path(entry)
        else:
            raise click.BadParameter(
                f"{entry!r}: with several symbols or files, give one --data SYMBOL=FILE per "
                "symbol.",
                param_hint="--data",
            )
    missing = [s for s in symbols if s not in files]
    unknown = [s for s in files if s not in symbols]
    if missing or unknown:
        raise click.BadParameter(
            f"the files name {sorted(files)} but the symbols are {symbols}; give one --data "
            "SYMBOL=FILE for each symbol of --symbols.",
            param_hint="--data",
        )
    for name, path in files.items():
        if not path.is_file():
            raise click.BadParameter(
                f"{name}: file {str(path)!r} does not exist.", param_hint="--data"
            )
    return files


def target_option(f: Any) -> Any:
    """``--target`` of ``atb train model`` and ``atb train walk-forward``."""
    return click.option(
        "--target",
        type=click.Choice(["log_return", "direction"]),
        default="log_return",
        show_default=True,
        help="direction: probabilities of [down, up] (ridge or lightgbm), calibrated on "
        "validation.",
    )(f)


def calibrate_option(f: Any) -> Any:
    """``--calibrate/--no-calibrate`` of ``atb train model`` and ``atb train walk-forward``."""
    return click.option(
        "--calibrate/--no-calibrate",
        default=None,
        help="Shrink predictions toward the train mean by their slope on the validation part "
        "[off for mlp/gru, on for the other families].",
    )(f)


def check_target(target: str, architecture: str, calibrate: bool | None = None) -> None:
    """``--target direction`` needs a family that exports class probabilities, and always
    calibrates them (a temperature fitted on the validation part)."""
    from atb_strategies.training.direction import CLASSIFIERS

    if target == "direction" and calibrate is False:
        raise click.BadParameter(
            "a direction classifier always calibrates its probabilities (a temperature fitted "
            "on the validation part); drop --no-calibrate.",
            param_hint="--no-calibrate",
        )
    if target == "direction" and architecture not in CLASSIFIERS:
        raise click.BadParameter(
            f"{architecture!r} cannot be trained and exported for --target direction (class "
            f"probabilities); use --architecture {' or '.join(CLASSIFIERS)}.",
            param_hint="--architecture",
        )
