"""A real two-node Ray cluster whose only worker node shares no files with the driver.

The head has 0 CPUs, so every task runs on the worker node, started with ``unshare -m`` and an
empty tmpfs mounted over the driver's registry, data and output folders: a task that read a
path of the driver's would find nothing there. The node also runs without this checkout on its
``PYTHONPATH``: the code arrives through the Ray runtime environment (``ATB_RAY_RUNTIME_ENV``,
``py_modules``). Sweeps and walk-forwards on it must equal the local executor's, register every
fold in the driver's registry, survive a node lost mid-run, and refuse a node with other
versions. Skipped where ``unshare``/``mount`` are not permitted (they need root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import atb_strategies
from atb_strategies import executors
from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.data.loaders import load_ohlcv
from atb_strategies.evaluation.walkforward import WalkForwardConfig, run_walk_forward
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.executors import run_tasks
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.writer import write_bundle
from atb_strategies.sweep import run_sweep
from tests.conftest import RICH_FEATURES, linear_onnx, synthetic_candles
from tests.integration.test_walk_forward import ar_market

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")

RAY = str(Path(sys.executable).parent / "ray")
CHECKOUT = Path(atb_strategies.__file__).resolve().parent.parent
START_TIMEOUT = 120.0
V1, V2 = "2026-01-01_1h_v1", "2026-01-02_1h_v2"


def _can_unshare(probe: Path) -> str | None:
    """None when ``unshare -m`` with a tmpfs mount works here; else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if not Path(RAY).exists():
        return f"no ray script beside {sys.executable}"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", probe],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if done.returncode != 0:
        return f"unshare -m / mount not permitted: {done.stderr.decode(errors='replace')[:200]}"
    return None


def _stop(process: subprocess.Popen) -> None:
    """End the process group ``process`` leads (``start_new_session``): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; its group may still hold children for a moment
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


class Cluster:
    """A head (0 CPUs) and one worker node in its own mount namespace."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.hidden = [base / "models", base / "data", base / "out"]
        for folder in self.hidden:
            folder.mkdir(parents=True)
            (folder / "driver-only.txt").write_text("a file only the driver sees")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # token authentication (Ray's default): every process reads ~/.ray/auth_token
        self.env["RAY_AUTH_MODE"] = "token"
        self.node_env = {k: v for k, v in self.env.items() if k != "PYTHONPATH"}
        self.head: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.address = ""

    def start(self) -> None:
        # Ray's sockets live under --temp-dir and a Unix socket path holds at most 107 bytes:
        # pytest's tmp paths (with xdist's popen-gwN) are too long, so a short folder of its own
        temp = Path(tempfile.mkdtemp(prefix="atbray", dir="/tmp"))
        self._ray_temp = temp
        with open(self.base / "head.log", "wb") as log:
            self.head = subprocess.Popen(
                [
                    *(RAY, "start", "--head", "--num-cpus", "0", "--port", "0", "--block"),
                    *(
                        "--include-dashboard=false",
                        "--disable-usage-stats",
                        "--temp-dir",
                        str(temp),
                    ),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pointer = temp / "ray_current_cluster"
        deadline = time.monotonic() + START_TIMEOUT
        while not (pointer.exists() and pointer.read_text().strip()):
            if time.monotonic() > deadline or self.head.poll() is not None:
                raise RuntimeError(f"the Ray head did not start: {self._log('head.log')}")
            time.sleep(0.5)
        self.address = pointer.read_text().strip()
        self.add_node()

    def add_node(self) -> None:
        hide = [*self.hidden, CHECKOUT]  # the node has neither the driver's files nor its code
        mounts = " && ".join(f"mount -t tmpfs none {folder}" for folder in hide)
        script = (
            f"{mounts} && exec {RAY} start --address {self.address} --num-cpus 2 "
            "--disable-usage-stats --block"
        )
        with open(self.base / f"node{len(self.nodes)}.log", "wb") as log:
            node = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                env=self.node_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes.append(node)

    def wait_for_cpus(self, cpus: float = 2) -> None:
        ray.init(address=self.address, log_to_driver=False)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while ray.available_resources().get("CPU", 0) < cpus:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker node did not join: {self._log('node0.log')}")
                time.sleep(0.5)
        finally:
            ray.shutdown()

    def _log(self, name: str) -> str:
        path = self.base / name
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        for node in self.nodes:
            _stop(node)
        if self.head is not None:
            _stop(self.head)
        temp = getattr(self, "_ray_temp", None)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    reason = _can_unshare(base / "probe")
    if reason is not None:
        pytest.skip(reason)
    if ray.is_initialized():
        ray.shutdown()
    shipped = {"py_modules": [str(Path(atb_strategies.__file__).parent)]}
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", executors.RUNTIME_ENV_VAR)}
    # a driver joining a `ray start` cluster needs RAY_AUTH_MODE=token when Ray starts (the
    # README says so); this process imported Ray already, so its config is read again
    os.environ["RAY_AUTH_MODE"] = "token"
    ray._raylet.Config.initialize("")
    os.environ[executors.RUNTIME_ENV_VAR] = json.dumps(shipped)
    found = Cluster(base)
    try:
        found.start()
        found.wait_for_cpus()
        yield found
    finally:
        if ray.is_initialized():
            ray.shutdown()
        found.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _look(_shared, folder: str) -> dict:
    """Runs on the node: what it sees of ``folder`` and where its code comes from."""
    import atb_strategies as here

    return {"listing": sorted(os.listdir(folder)), "code": here.__file__}


def test_every_task_runs_where_the_driver_folders_are_empty(cluster):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folders = [str(f) for f in cluster.hidden]
    seen = dict(run_tasks(_look, folders, executor="ray", ray_address=cluster.address))
    for i, folder in enumerate(folders):
        assert os.listdir(folder) == ["driver-only.txt"]
        assert seen[i]["listing"] == [], seen[i]
        # not this checkout (hidden on the node): shipped by the runtime environment
        assert "runtime_resources" in seen[i]["code"], seen[i]["code"]
    transfer = executors.last_transfer
    assert transfer["count"] == 3 and transfer["results"] > 0


def _bundle(root: Path, version: str, seed: int) -> None:
    meta = BundleMetadata(
        symbol="BTCUSDT",
        model_type="basic",
        timeframe="1h",
        version=version,
        input=InputSpec("features", "float32", 16, 3),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
    )
    schema = FeatureSchema(16, tuple(RICH_FEATURES[:3]))
    write_bundle(root, meta, schema, linear_onnx(16, 3, seed=seed), promote=True)


def test_sweep_on_the_cluster_equals_the_local_executor(cluster):
    registry, data, out = cluster.hidden
    _bundle(registry, V1, seed=0)
    _bundle(registry, V2, seed=1)
    synthetic_candles(500, seed=3).to_csv(data / "candles.csv")
    candles = load_ohlcv(data / "candles.csv", timeframe="1h")
    settings = {
        "versions": [None, V1],
        "params": {"registry": str(registry)},
        "commission": 0.0005,
    }
    grid = {"long_threshold": [0.0, 0.002], "stop_loss": [0.01, 0.03]}
    local = run_sweep("ml_basic", candles, grid, executor="local", workers=2, **settings)
    remote = run_sweep(
        "ml_basic",
        candles,
        grid,
        executor="ray",
        ray_address=cluster.address,
        out=out / "sweep",
        **settings,
    )
    assert remote.attrs["failed"] == 0, remote["error"].tolist()
    assert len(remote) == 8 and remote["error"].isna().all()
    pd.testing.assert_frame_equal(remote, local, check_like=False)
    assert (out / "sweep" / "results.csv").exists()  # written by the driver


def _wf_config(registry: Path, **changes) -> WalkForwardConfig:
    settings = {
        "symbol": "BTCUSDT",
        "train_bars": 600,
        "test_bars": 100,
        "sequence_length": 8,
        "epochs": 1,
        "registry": registry,
        "bootstrap_reps": 200,
        "max_folds": 2,
    }
    return WalkForwardConfig(**{**settings, **changes})


def _whole_versions(registry: Path) -> list[str]:
    """Every version of BTCUSDT/basic, each checked to be a whole, loadable bundle."""
    layout = RegistryLayout(registry)
    versions = layout.versions("BTCUSDT", "basic")
    for version in versions:
        spec = load_bundle_spec(
            layout.version_dir("BTCUSDT", "basic", version),
            identity=("BTCUSDT", "basic", version),
        )
        assert spec.metadata.version == version
    return versions


def test_walk_forward_on_the_cluster_registers_every_fold_in_the_driver_registry(cluster, tmp_path):
    market = ar_market(600 + 176 + 2 * 100 + 1, phi=0.3, seed=4)
    registry = cluster.hidden[0] / "wf"
    remote = run_walk_forward(
        market, _wf_config(registry), executor="ray", ray_address=cluster.address
    )
    # the reference runs in this process: test_walk_forward shows the local executor equals it
    local = run_walk_forward(market, _wf_config(tmp_path / "models"), executor="serial")
    assert [r.error for r in remote.results] == [None] * len(remote.results)
    pd.testing.assert_frame_equal(
        remote.predictions.drop(columns="version"), local.predictions.drop(columns="version")
    )
    versions = _whole_versions(registry)
    assert sorted(versions) == sorted(r.version for r in remote.results)
    assert len(set(versions)) == len(versions) == 2
    for result in remote.results:
        meta = json.loads(
            (RegistryLayout(registry).version_dir("BTCUSDT", "basic", result.version))
            .joinpath("metadata.json")
            .read_text()
        )
        assert meta["training"]["walk_forward_id"] == remote.walk_forward_id
        assert meta["training"]["fold"] == result.fold.number
        assert meta["training"]["config"]["registry"] == str(registry)
    ledger = (registry / "BTCUSDT" / "basic" / ".versions").read_text().split()
    assert len(ledger) == len(set(ledger))


def test_walk_forward_with_its_node_lost_mid_run_finishes_on_a_new_node(cluster, tmp_path):
    """The worker node is killed once the first fold is registered and a new one joins (as an
    autoscaler would): the lost folds are retried there, and the registry holds only whole
    versions."""
    market = ar_market(600 + 176 + 3 * 100 + 1, phi=0.3, seed=5)
    registry = cluster.hidden[0] / "lost"
    killed: list[int] = []

    def lose_the_node(result, total) -> None:
        if not killed:
            killed.append(cluster.nodes[-1].pid)
            _stop(cluster.nodes[-1])
            cluster.add_node()

    result = run_walk_forward(
        market,
        _wf_config(registry, max_folds=3),
        executor="ray",
        ray_address=cluster.address,
        on_result=lose_the_node,
    )
    assert killed
    registered = [r.version for r in result.results if r.version is not None]
    failed = [r for r in result.results if r.error is not None]
    assert len(registered) + len(failed) == 3
    assert all(r.version is None for r in failed)
    assert sorted(_whole_versions(registry)) == sorted(registered)
    assert not list(registry.glob(".staging-*"))


def _echo(_shared, task):
    return task


def test_a_node_with_other_versions_is_refused_with_one_line(cluster, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(
        executors, "node_versions", lambda: {"atb-strategies": "9.9.9", "onnxruntime": "0.0.1"}
    )
    with pytest.raises(ConfigurationError) as e:
        list(run_tasks(_echo, ["a", "b"], executor="ray", ray_address=cluster.address))
    message = str(e.value)
    assert "\n" not in message
    assert "atb-strategies 9.9.9" in message  # the driver's, as patched here
    assert f"atb-strategies {atb_strategies.__version__}" in message  # the node's
    assert "runtime environment" in message
