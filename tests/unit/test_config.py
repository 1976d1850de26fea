"""``PredictionConfig.from_config_manager``: defaults < TOML file < ``ATB_*`` environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from atb_strategies.config import SHIPPED_MODELS, PredictionConfig
from atb_strategies.exceptions import ConfigurationError


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no ./atb.toml, no ./models."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _toml(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[prediction]\n" + body + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_from_config_manager_with_nothing_set_returns_defaults(cwd):
    config = PredictionConfig.from_config_manager(environ={})
    assert config == PredictionConfig(model_registry_path=SHIPPED_MODELS)
    assert config.model_registry_path == SHIPPED_MODELS
    assert config.default_symbol == "BTCUSDT"
    assert config.default_model_type == "basic"
    assert config.default_timeframe == "1h"
    assert config.default_version is None
    assert config.intra_op_num_threads == 1
    assert config.providers == "cpu"
    assert config.direction_threshold == 0.0
    assert config.verify_checksum is True
    assert config.batch_parity is True
    assert config.runner_options == {
        "intra_op_num_threads": 1,
        "providers": "cpu",
        "direction_threshold": 0.0,
        "batch_parity": True,
    }


def test_from_config_manager_with_models_dir_in_cwd_uses_it(cwd):
    (cwd / "models").mkdir()
    config = PredictionConfig.from_config_manager(environ={})
    assert config.model_registry_path.resolve() == (cwd / "models").resolve()


def test_from_config_manager_with_models_file_in_cwd_ignores_it(cwd):
    (cwd / "models").write_text("not a directory")
    config = PredictionConfig.from_config_manager(environ={})
    assert config.model_registry_path == SHIPPED_MODELS


def test_from_config_manager_with_empty_environ_ignores_process_environment(cwd, monkeypatch):
    monkeypatch.setenv("ATB_DEFAULT_SYMBOL", "ETHUSDT")
    assert PredictionConfig.from_config_manager(environ={}).default_symbol == "BTCUSDT"


# ---------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("ATB_DEFAULT_SYMBOL", "ETHUSDT", "default_symbol", "ETHUSDT"),
        ("ATB_DEFAULT_MODEL_TYPE", "sentiment", "default_model_type", "sentiment"),
        ("ATB_DEFAULT_TIMEFRAME", "4h", "default_timeframe", "4h"),
        ("ATB_MODEL_VERSION", "2026-01-01_1h_v3", "default_version", "2026-01-01_1h_v3"),
        ("ATB_ONNX_THREADS", "3", "intra_op_num_threads", 3),
        ("ATB_ONNX_PROVIDERS", "auto", "providers", "auto"),
        ("ATB_DIRECTION_THRESHOLD", "0.0025", "direction_threshold", 0.0025),
        ("ATB_VERIFY_CHECKSUM", "false", "verify_checksum", False),
        ("ATB_VERIFY_CHECKSUM", "0", "verify_checksum", False),
        ("ATB_VERIFY_CHECKSUM", "No", "verify_checksum", False),
        ("ATB_VERIFY_CHECKSUM", "off", "verify_checksum", False),
        ("ATB_VERIFY_CHECKSUM", "yes", "verify_checksum", True),
    ],
)
def test_from_config_manager_with_env_var_sets_field(cwd, var, raw, field, expected):
    config = PredictionConfig.from_config_manager(environ={var: raw})
    value = getattr(config, field)
    assert value == expected
    assert type(value) is type(expected)


def test_from_config_manager_with_registry_env_var_sets_path(cwd, tmp_path):
    config = PredictionConfig.from_config_manager(
        environ={"ATB_MODEL_REGISTRY_PATH": str(tmp_path / "reg")}
    )
    assert config.model_registry_path == tmp_path / "reg"
    assert isinstance(config.model_registry_path, Path)


def test_from_config_manager_with_tilde_registry_env_var_expands_home(cwd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = PredictionConfig.from_config_manager(environ={"ATB_MODEL_REGISTRY_PATH": "~/reg"})
    assert config.model_registry_path == tmp_path / "reg"


def test_from_config_manager_with_empty_env_var_keeps_default(cwd):
    config = PredictionConfig.from_config_manager(
        environ={"ATB_DEFAULT_SYMBOL": "", "ATB_ONNX_THREADS": ""}
    )
    assert config.default_symbol == "BTCUSDT"
    assert config.intra_op_num_threads == 1


@pytest.mark.parametrize(
    ("var", "raw", "kind"),
    [
        ("ATB_ONNX_THREADS", "many", "int"),
        ("ATB_ONNX_THREADS", "2.5", "int"),
        ("ATB_DIRECTION_THRESHOLD", "high", "float"),
        ("ATB_VERIFY_CHECKSUM", "maybe", "bool"),
    ],
)
def test_from_config_manager_with_bad_env_value_raises_naming_variable(cwd, var, raw, kind):
    with pytest.raises(ConfigurationError) as info:
        PredictionConfig.from_config_manager(environ={var: raw})
    message = str(info.value)
    assert var in message
    assert f"valid {kind}" in message
    assert repr(raw) in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", ["0", "-2"])
def test_from_config_manager_with_non_positive_thread_count_raises(cwd, raw):
    with pytest.raises(ConfigurationError, match=rf"'intra_op_num_threads'.*>= 1.*Got {raw}"):
        PredictionConfig.from_config_manager(environ={"ATB_ONNX_THREADS": raw})


def test_prediction_config_with_zero_threads_raises_configuration_error():
    with pytest.raises(ConfigurationError, match="'intra_op_num_threads'"):
        PredictionConfig(intra_op_num_threads=0)


def test_from_config_manager_with_negative_threshold_raises(cwd):
    with pytest.raises(ConfigurationError, match="'direction_threshold'.*>= 0"):
        PredictionConfig.from_config_manager(environ={"ATB_DIRECTION_THRESHOLD": "-0.1"})


def test_from_config_manager_with_nan_threshold_raises(cwd):
    with pytest.raises(ConfigurationError, match="direction_threshold"):
        PredictionConfig.from_config_manager(environ={"ATB_DIRECTION_THRESHOLD": "nan"})


# ---------------------------------------------------------------- config file


FULL_FILE = """\
model_registry_path = "/srv/models"
default_symbol = "ETHUSDT"
default_model_type = "sentiment"
default_timeframe = "4h"
default_version = "2026-01-01_4h_v2"
intra_op_num_threads = 2
providers = "auto"
direction_threshold = 0.001
verify_checksum = false"""


def test_from_config_manager_with_config_file_argument_reads_every_key(cwd, tmp_path):
    path = _toml(tmp_path / "conf" / "atb.toml", FULL_FILE)
    config = PredictionConfig.from_config_manager(config_file=path, environ={})
    assert config == PredictionConfig(
        model_registry_path=Path("/srv/models"),
        default_symbol="ETHUSDT",
        default_model_type="sentiment",
        default_timeframe="4h",
        default_version="2026-01-01_4h_v2",
        intra_op_num_threads=2,
        providers="auto",
        direction_threshold=0.001,
        verify_checksum=False,
    )


def test_from_config_manager_with_config_file_as_string_reads_it(cwd, tmp_path):
    path = _toml(tmp_path / "atb.toml", 'default_symbol = "SOLUSDT"')
    config = PredictionConfig.from_config_manager(config_file=str(path), environ={})
    assert config.default_symbol == "SOLUSDT"


def test_from_config_manager_with_atb_config_file_env_reads_it(cwd, tmp_path):
    path = _toml(tmp_path / "elsewhere.toml", "intra_op_num_threads = 4")
    config = PredictionConfig.from_config_manager(environ={"ATB_CONFIG_FILE": str(path)})
    assert config.intra_op_num_threads == 4


def test_from_config_manager_with_atb_toml_in_cwd_reads_it(cwd):
    _toml(cwd / "atb.toml", 'default_timeframe = "15m"')
    config = PredictionConfig.from_config_manager(environ={})
    assert config.default_timeframe == "15m"


def test_from_config_manager_with_argument_and_env_file_prefers_argument(cwd, tmp_path):
    arg = _toml(tmp_path / "arg.toml", 'default_symbol = "ARGUSDT"')
    env = _toml(tmp_path / "env.toml", 'default_symbol = "ENVUSDT"')
    _toml(cwd / "atb.toml", 'default_symbol = "CWDUSDT"')
    config = PredictionConfig.from_config_manager(
        config_file=arg, environ={"ATB_CONFIG_FILE": str(env)}
    )
    assert config.default_symbol == "ARGUSDT"
    config = PredictionConfig.from_config_manager(environ={"ATB_CONFIG_FILE": str(env)})
    assert config.default_symbol == "ENVUSDT"


def test_from_config_manager_with_file_and_env_prefers_env(cwd, tmp_path):
    path = _toml(tmp_path / "atb.toml", FULL_FILE)
    config = PredictionConfig.from_config_manager(
        config_file=path,
        environ={
            "ATB_DEFAULT_SYMBOL": "XRPUSDT",
            "ATB_ONNX_THREADS": "6",
            "ATB_VERIFY_CHECKSUM": "true",
            "ATB_MODEL_REGISTRY_PATH": str(tmp_path / "env-models"),
        },
    )
    assert config.default_symbol == "XRPUSDT"
    assert config.intra_op_num_threads == 6
    assert config.verify_checksum is True
    assert config.model_registry_path == tmp_path / "env-models"
    # keys the environment does not set still come from the file
    assert config.default_model_type == "sentiment"
    assert config.direction_threshold == 0.001


def test_from_config_manager_with_relative_registry_in_file_resolves_beside_file(cwd, tmp_path):
    path = _toml(tmp_path / "conf" / "atb.toml", 'model_registry_path = "../registry"')
    config = PredictionConfig.from_config_manager(config_file=path, environ={})
    assert config.model_registry_path == tmp_path / "conf" / "../registry"
    assert config.model_registry_path.resolve() == (tmp_path / "registry").resolve()


def test_from_config_manager_with_relative_registry_via_env_file_resolves_beside_file(
    cwd, tmp_path
):
    path = _toml(tmp_path / "conf" / "atb.toml", 'model_registry_path = "models"')
    config = PredictionConfig.from_config_manager(environ={"ATB_CONFIG_FILE": str(path)})
    assert config.model_registry_path.resolve() == (tmp_path / "conf" / "models").resolve()


def test_from_config_manager_with_file_without_prediction_table_returns_defaults(cwd, tmp_path):
    path = tmp_path / "atb.toml"
    path.write_text("[training]\nepochs = 3\n", encoding="utf-8")
    config = PredictionConfig.from_config_manager(config_file=path, environ={})
    assert config == PredictionConfig(model_registry_path=SHIPPED_MODELS)


def test_from_config_manager_with_unknown_key_raises_naming_it(cwd, tmp_path):
    path = _toml(tmp_path / "atb.toml", 'default_symbol = "BTCUSDT"\nthreads = 2')
    with pytest.raises(ConfigurationError, match=r"unknown \[prediction\] key\(s\) \['threads'\]"):
        PredictionConfig.from_config_manager(config_file=path, environ={})


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('intra_op_num_threads = "two"', "intra_op_num_threads"),
        ('direction_threshold = "high"', "direction_threshold"),
        ('verify_checksum = "maybe"', "verify_checksum"),
        ("model_registry_path = 5", "model_registry_path"),
    ],
)
def test_from_config_manager_with_bad_file_value_raises_naming_key(cwd, tmp_path, body, key):
    path = _toml(tmp_path / "atb.toml", body)
    with pytest.raises(ConfigurationError) as info:
        PredictionConfig.from_config_manager(config_file=path, environ={})
    assert f"[prediction].{key}" in str(info.value)
    assert str(path) in str(info.value)


def test_from_config_manager_with_zero_threads_in_file_raises(cwd, tmp_path):
    path = _toml(tmp_path / "atb.toml", "intra_op_num_threads = 0")
    with pytest.raises(ConfigurationError, match="'intra_op_num_threads'"):
        PredictionConfig.from_config_manager(config_file=path, environ={})


def test_from_config_manager_with_fractional_threads_in_file_raises(cwd, tmp_path):
    path = _toml(tmp_path / "atb.toml", "intra_op_num_threads = 2.7")
    with pytest.raises(ConfigurationError, match="intra_op_num_threads"):
        PredictionConfig.from_config_manager(config_file=path, environ={})


@pytest.mark.parametrize("key", ["intra_op_num_threads", "direction_threshold"])
def test_from_config_manager_with_boolean_for_number_in_file_raises(cwd, tmp_path, key):
    path = _toml(tmp_path / "atb.toml", f"{key} = true")
    with pytest.raises(ConfigurationError, match=key):
        PredictionConfig.from_config_manager(config_file=path, environ={})


def test_from_config_manager_with_invalid_toml_raises(cwd, tmp_path):
    path = tmp_path / "atb.toml"
    path.write_text("[prediction\ndefault_symbol = ", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        PredictionConfig.from_config_manager(config_file=path, environ={})


def test_from_config_manager_with_prediction_not_a_table_raises(cwd, tmp_path):
    path = tmp_path / "atb.toml"
    path.write_text('prediction = "basic"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"\[prediction\] must be a table"):
        PredictionConfig.from_config_manager(config_file=path, environ={})


def test_from_config_manager_with_missing_env_config_file_raises(cwd, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        PredictionConfig.from_config_manager(environ={"ATB_CONFIG_FILE": str(missing)})
    assert str(missing) in str(info.value)


def test_with_overrides_with_new_registry_returns_new_config(cwd, tmp_path):
    base = PredictionConfig.from_config_manager(environ={"ATB_ONNX_THREADS": "2"})
    changed = base.with_overrides(model_registry_path=str(tmp_path))
    assert changed.model_registry_path == tmp_path
    assert changed.intra_op_num_threads == 2
    assert base.model_registry_path == SHIPPED_MODELS
