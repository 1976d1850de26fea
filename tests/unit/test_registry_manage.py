"""Registry management on real bundles: version ids, promote, rollback, prune, concurrency.

Bundles are real (a small linear ONNX model written by ``write_bundle``), versions are issued by
``allocate_version`` exactly as the trainer does, and concurrency is real threads and processes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from atb_strategies.exceptions import ModelNotFoundError, RegistryError
from atb_strategies.registry import manage
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.registry import ModelRegistry
from tests.conftest import BundleFactory

SYMBOL = "BTCUSDT"
TYPE = "basic"
DAY = dt.date(2026, 3, 1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def layout(root: Path) -> RegistryLayout:
    return RegistryLayout(root)


@pytest.fixture
def new_version(make_bundle: BundleFactory, layout: RegistryLayout):
    """Allocate a version id like the trainer does and write a real bundle under it."""
    counter = {"seed": 0}

    def factory(*, promote: bool = False, timeframe: str = "1h") -> str:
        version = manage.allocate_version(layout, SYMBOL, TYPE, timeframe, today=DAY)
        counter["seed"] += 1
        make_bundle(
            root=layout.root,
            version=version,
            timeframe=timeframe,
            seed=counter["seed"],
            promote=False,
        )
        if promote:
            manage.promote(layout, SYMBOL, TYPE, version)
        return version

    return factory


def _number(version: str) -> int:
    m = re.search(r"_v(\d+)$", version)
    assert m is not None, version
    return int(m.group(1))


def _hidden_leftovers(layout: RegistryLayout) -> list[str]:
    tdir = layout.type_dir(SYMBOL, TYPE)
    return sorted(n for n in os.listdir(tdir) if n.startswith((".deleted-", ".tmp-", ".latest.")))


# ---------------------------------------------------------------- allocate_version


def test_allocate_version_with_fresh_type_issues_dated_ids_counting_up(
    layout: RegistryLayout,
) -> None:
    first = manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY)
    second = manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY)
    later = manage.allocate_version(layout, SYMBOL, TYPE, "4h", today=dt.date(2026, 3, 2))

    assert (first, second) == ("2026-03-01_1h_v1", "2026-03-01_1h_v2")
    # N counts per type, across days and timeframes, so it never repeats.
    assert later == "2026-03-02_4h_v3"
    ledger = (layout.type_dir(SYMBOL, TYPE) / manage.LEDGER).read_text().split()
    assert ledger == [first, second, later]


def test_allocate_version_with_default_day_uses_today_in_utc(layout: RegistryLayout) -> None:
    before = dt.datetime.now(dt.UTC).date()
    version = manage.allocate_version(layout, SYMBOL, TYPE, "1h")
    after = dt.datetime.now(dt.UTC).date()

    day, timeframe, n = version.split("_")
    assert day in (before.isoformat(), after.isoformat())
    assert (timeframe, n) == ("1h", "v1")


def test_allocate_version_with_unsafe_timeframe_raises_registry_error(
    layout: RegistryLayout,
) -> None:
    with pytest.raises(RegistryError, match="timeframe"):
        manage.allocate_version(layout, SYMBOL, TYPE, "../1h", today=DAY)


def test_allocate_version_with_unwritten_allocation_never_reissues_it(
    layout: RegistryLayout,
) -> None:
    # An id handed to a trainer that then crashed (no directory) is still used.
    crashed = manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY)
    assert not layout.version_dir(SYMBOL, TYPE, crashed).exists()

    assert manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY) == "2026-03-01_1h_v2"


def test_allocate_version_with_unledgered_directories_counts_past_them(
    layout: RegistryLayout, make_bundle: BundleFactory
) -> None:
    # Bundles copied in from elsewhere (no .versions entry) still reserve their N.
    make_bundle(root=layout.root, version="2025-12-31_1h_v7", promote=False)

    assert manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY) == "2026-03-01_1h_v8"


def test_allocate_version_with_many_threads_gives_distinct_ids(layout: RegistryLayout) -> None:
    per_thread, threads = 15, 8
    results: list[list[str]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(slot: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            results[slot].append(manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)

    issued = [v for r in results for v in r]
    assert len(issued) == per_thread * threads
    assert len(set(issued)) == len(issued)
    assert sorted(_number(v) for v in issued) == list(range(1, len(issued) + 1))


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from atb_strategies.registry.layout import RegistryLayout
    from atb_strategies.registry.manage import allocate_version

    layout = RegistryLayout(sys.argv[1])
    go = Path(sys.argv[2])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    ids = [allocate_version(layout, "BTCUSDT", "basic", "1h") for _ in range(int(sys.argv[3]))]
    print("\\n".join(ids), flush=True)
    """
)


def test_allocate_version_with_concurrent_processes_gives_distinct_ids(
    layout: RegistryLayout, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    per_process, processes = 25, 3
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(layout.root), str(go), str(per_process)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        go.touch()
        mine = [manage.allocate_version(layout, SYMBOL, TYPE, "1h") for _ in range(per_process)]
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    issued = mine + [v for out, _ in outputs for v in out.split()]
    assert len(issued) == per_process * (processes + 1)
    assert len(set(issued)) == len(issued)
    ledger = (layout.type_dir(SYMBOL, TYPE) / manage.LEDGER).read_text().split()
    assert sorted(ledger) == sorted(issued)


def test_allocate_version_with_pruned_versions_never_reuses_their_number(
    layout: RegistryLayout, new_version
) -> None:
    v1, v2, v3 = (new_version() for _ in range(3))
    manage.promote(layout, SYMBOL, TYPE, v1)
    assert manage.prune(layout, SYMBOL, TYPE, keep=1) == [v2]
    # An operator then deletes the newest by hand: only the ledger remembers v3 now.
    shutil.rmtree(layout.version_dir(SYMBOL, TYPE, v3))

    fresh = manage.allocate_version(layout, SYMBOL, TYPE, "1h", today=DAY)

    assert _number(fresh) == 4
    assert fresh not in (v1, v2, v3)


# ---------------------------------------------------------------- promote / rollback


def test_promote_with_sequence_then_rollbacks_walks_back_through_history(
    layout: RegistryLayout, new_version
) -> None:
    a, b, c = (new_version() for _ in range(3))

    assert manage.promote(layout, SYMBOL, TYPE, a) is None
    assert manage.promote(layout, SYMBOL, TYPE, b) == a
    assert manage.promote(layout, SYMBOL, TYPE, c) == b
    assert layout.read_latest(SYMBOL, TYPE) == c

    assert manage.rollback(layout, SYMBOL, TYPE) == b
    assert layout.read_latest(SYMBOL, TYPE) == b
    assert manage.rollback(layout, SYMBOL, TYPE) == a
    assert layout.read_latest(SYMBOL, TYPE) == a
    with pytest.raises(RegistryError, match="no earlier 'latest'"):
        manage.rollback(layout, SYMBOL, TYPE)
    assert layout.read_latest(SYMBOL, TYPE) == a
    assert ModelRegistry(layout.root).select_bundle(SYMBOL, TYPE).version == a


def test_promote_after_rollback_then_rollback_returns_to_rolled_back_version(
    layout: RegistryLayout, new_version
) -> None:
    a, b, c = (new_version() for _ in range(3))
    for v in (a, b):
        manage.promote(layout, SYMBOL, TYPE, v)
    assert manage.rollback(layout, SYMBOL, TYPE) == a

    manage.promote(layout, SYMBOL, TYPE, c)

    assert manage.rollback(layout, SYMBOL, TYPE) == a


def test_rollback_with_pointer_but_no_history_raises_registry_error(
    layout: RegistryLayout, new_version
) -> None:
    a = new_version()
    layout.write_latest(SYMBOL, TYPE, a)  # e.g. a copied registry: pointer, no history

    with pytest.raises(RegistryError, match="atb models promote"):
        manage.rollback(layout, SYMBOL, TYPE)
    assert layout.read_latest(SYMBOL, TYPE) == a


def test_rollback_with_no_latest_at_all_raises_registry_error(
    layout: RegistryLayout, new_version
) -> None:
    new_version()

    with pytest.raises(RegistryError):
        manage.rollback(layout, SYMBOL, TYPE)
    assert layout.read_latest(SYMBOL, TYPE) is None


def test_promote_with_pointer_but_no_history_records_previous_for_rollback(
    layout: RegistryLayout, new_version
) -> None:
    a, b = new_version(), new_version()
    layout.write_latest(SYMBOL, TYPE, a)

    assert manage.promote(layout, SYMBOL, TYPE, b) == a
    assert manage.rollback(layout, SYMBOL, TYPE) == a


def test_promote_with_unknown_version_raises_model_not_found_listing_versions(
    layout: RegistryLayout, new_version
) -> None:
    a, b = new_version(promote=True), new_version()

    with pytest.raises(ModelNotFoundError) as info:
        manage.promote(layout, SYMBOL, TYPE, "2026-03-01_1h_v99")

    message = str(info.value)
    assert "2026-03-01_1h_v99" in message
    assert a in message and b in message
    assert layout.read_latest(SYMBOL, TYPE) == a


def test_promote_with_unsafe_version_name_raises_registry_error(
    layout: RegistryLayout, new_version
) -> None:
    a = new_version(promote=True)

    with pytest.raises(RegistryError):
        manage.promote(layout, SYMBOL, TYPE, "../../etc")
    assert layout.read_latest(SYMBOL, TYPE) == a


def test_promote_with_unknown_symbol_leaves_registry_unchanged(
    layout: RegistryLayout, new_version
) -> None:
    new_version(promote=True)
    before = sorted(p.relative_to(layout.root) for p in layout.root.rglob("*"))

    with pytest.raises(ModelNotFoundError):
        manage.promote(layout, "BTCUSD", TYPE, "2026-03-01_1h_v1")
    with pytest.raises(RegistryError):
        manage.rollback(layout, SYMBOL, "basci")

    after = sorted(p.relative_to(layout.root) for p in layout.root.rglob("*"))
    assert after == before
    assert layout.symbols() == [SYMBOL]


def test_rollback_with_pruned_previous_version_skips_to_an_existing_one(
    layout: RegistryLayout, new_version
) -> None:
    a, b, c = (new_version() for _ in range(3))
    for v in (a, b, c, a):
        manage.promote(layout, SYMBOL, TYPE, v)
    # keep=1 keeps the newest (c) and latest (a): b goes.
    assert manage.prune(layout, SYMBOL, TYPE, keep=1) == [b]

    assert manage.rollback(layout, SYMBOL, TYPE) == c
    assert manage.rollback(layout, SYMBOL, TYPE) == a  # b no longer exists
    with pytest.raises(RegistryError):
        manage.rollback(layout, SYMBOL, TYPE)


# ---------------------------------------------------------------- prune


def test_prune_with_keep_one_and_oldest_latest_keeps_latest_and_newest(
    layout: RegistryLayout, new_version
) -> None:
    v1, v2, v3 = (new_version() for _ in range(3))
    manage.promote(layout, SYMBOL, TYPE, v1)

    removed = manage.prune(layout, SYMBOL, TYPE, keep=1)

    assert removed == [v2]
    assert layout.versions(SYMBOL, TYPE) == [v1, v3]
    assert layout.read_latest(SYMBOL, TYPE) == v1
    assert ModelRegistry(layout.root).select_bundle(SYMBOL, TYPE).version == v1
    assert _hidden_leftovers(layout) == []


def test_prune_with_keep_two_and_newest_latest_removes_oldest_only(
    layout: RegistryLayout, new_version
) -> None:
    versions = [new_version() for _ in range(4)]
    manage.promote(layout, SYMBOL, TYPE, versions[-1])

    assert manage.prune(layout, SYMBOL, TYPE, keep=2) == versions[:2]
    assert layout.versions(SYMBOL, TYPE) == versions[2:]
    assert _hidden_leftovers(layout) == []
    assert [i.version for i in ModelRegistry(layout.root).list_bundles()] == versions[2:]


def test_prune_with_keep_larger_than_versions_removes_nothing(
    layout: RegistryLayout, new_version
) -> None:
    versions = [new_version() for _ in range(2)]

    assert manage.prune(layout, SYMBOL, TYPE, keep=5) == []
    assert layout.versions(SYMBOL, TYPE) == versions


def test_prune_with_numbers_past_nine_orders_versions_numerically(
    layout: RegistryLayout, new_version
) -> None:
    versions = [new_version() for _ in range(11)]  # v1..v11: "v10" < "v2" as text
    manage.promote(layout, SYMBOL, TYPE, versions[-1])

    removed = manage.prune(layout, SYMBOL, TYPE, keep=2)

    assert layout.versions(SYMBOL, TYPE) == versions[-2:]
    assert removed == versions[:-2]


@pytest.mark.parametrize("keep", [0, -1])
def test_prune_with_keep_below_one_raises_registry_error(
    layout: RegistryLayout, new_version, keep: int
) -> None:
    versions = [new_version() for _ in range(2)]

    with pytest.raises(RegistryError, match="at least 1"):
        manage.prune(layout, SYMBOL, TYPE, keep=keep)
    assert layout.versions(SYMBOL, TYPE) == versions


# ---------------------------------------------------------------- concurrent readers


def test_select_bundle_with_concurrent_promote_and_rollback_never_fails(
    layout: RegistryLayout, new_version
) -> None:
    versions = [new_version() for _ in range(3)]
    manage.promote(layout, SYMBOL, TYPE, versions[0])
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()
    reads = {"n": 0}

    def reader() -> None:
        registry = ModelRegistry(layout.root)
        while not stop.is_set():
            try:
                latest = layout.read_latest(SYMBOL, TYPE)
                assert latest in versions
                seen.add(registry.select_bundle(SYMBOL, TYPE, "1h").version)
                flagged = [i.version for i in registry.list_bundles() if i.is_latest]
                assert len(flagged) == 1, flagged
                if reads["n"] % 10 == 0:
                    registry.reload()  # re-read the disk, not only the cache
                reads["n"] += 1
            except BaseException as e:
                errors.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(150):
            if i % 3 == 2:
                manage.rollback(layout, SYMBOL, TYPE)
            else:
                manage.promote(layout, SYMBOL, TYPE, versions[i % len(versions)])
    finally:
        stop.set()
        thread.join(timeout=60)

    assert errors == []
    assert reads["n"] > 0
    assert len(seen) >= 2, "the reader never observed a switch"
    assert _hidden_leftovers(layout) == []


@pytest.mark.slow
def test_select_bundle_with_concurrent_promote_and_prune_never_fails(
    layout: RegistryLayout, new_version
) -> None:
    new_version(promote=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                ModelRegistry(layout.root).select_bundle(SYMBOL, TYPE)
            except BaseException as e:
                errors.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(300):
            if errors:
                break
            new_version(promote=True)
            manage.prune(layout, SYMBOL, TYPE, keep=1)
    finally:
        stop.set()
        thread.join(timeout=60)

    assert errors == []
