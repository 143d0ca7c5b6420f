"""The persistent ledger: spend that survives restarts and is shared by processes.

Store-level tests open real SQLite files from several processes; server tests
run real ``cope serve`` processes on 127.0.0.1 in front of a scripted upstream
that counts what it billed, kill one with SIGKILL mid-call, restart it, and
hammer two servers (and one server with two workers) sharing one ledger.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import shutil
import socket

from cope.errors import ConfigError
from cope.serve.spend import MemoryStore, Refused, period_ids, zone
from cope.serve.stores import open_store
from fault_server import FaultServer, Reply, completion_body
from serving import REMOTE_COST, SMOL, ServerProcess, http, wait_for

pytestmark = pytest.mark.timeout(300)

DAY = 86400.0
T0 = 1_764_633_600.0  # 2025-12-02 00:00 UTC, for period arithmetic; tests that reopen a store use the clock


# ---------------------------------------------------------------------------
# the stores: SQLite (a file) and Redis (a real redis-server started here on 127.0.0.1)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A redis-server of our own on a free loopback port, stopped at the end."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt-get); the redis ledger is untested")
    pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", client
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request, tmp_path):
    """(backend, where): a fresh SQLite file, or the test redis emptied."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "ledger.sqlite3")
    url, client = request.getfixturevalue("redis_server")
    client.flushall()
    return "redis", url


def _open(spec, stale_s: float = 3600.0):
    backend, where = spec
    return open_store(backend, path=where if backend == "sqlite" else None,
                      url=where if backend == "redis" else None, stale_s=stale_s)


def test_spend_and_holds_survive_reopening_the_store(store_spec):
    now = time.time()  # opening a store charges stale holds by the clock
    store = _open(store_spec)
    hold = store.reserve("alice", 0.5, {"total": 1.0}, now)
    store.settle(hold, 0.25)
    left = store.reserve("alice", 0.5, {"total": 1.0}, now + 1)  # in flight when the process goes away
    store.close()

    again = _open(store_spec)
    use = again.usage("alice", now + 2)
    assert use.spent["total"] == pytest.approx(0.25) and use.held["total"] == pytest.approx(0.5) and use.holds == 1
    with pytest.raises(Refused) as refused:  # 0.25 spent + 0.5 held + 0.5 would be asked: 0.75 < 1, so one more
        again.reserve("alice", 0.5, {"total": 1.0}, now + 3)
        again.reserve("alice", 0.5, {"total": 1.0}, now + 4)
    assert refused.value.period == "total"
    again.settle(left, 0.1)
    assert again.usage("alice", now + 5).spent["total"] == pytest.approx(0.35)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request, tmp_path):
    """A fresh store of each backend, the in-memory one included."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return _open(("sqlite", str(tmp_path / "ledger.sqlite3")))
    url, client = request.getfixturevalue("redis_server")
    client.flushall()
    return _open(("redis", url))


def test_a_daily_budget_turns_at_midnight_in_the_ledgers_time_zone(any_store):
    store = any_store
    budgets = {"day": 1.0, "total": 2.5}
    hold = store.reserve("k", 1.0, budgets, T0 + 10)
    store.settle(hold, 1.0)  # the day's budget is spent
    with pytest.raises(Refused) as first:
        store.reserve("k", 0.1, budgets, T0 + DAY - 1)
    assert first.value.period == "day"
    next_day = store.reserve("k", 1.0, budgets, T0 + DAY + 1)  # a new day: allowed, on the same total
    store.settle(next_day, 1.0)
    use = store.usage("k", T0 + DAY + 2)
    assert use.spent == {"total": pytest.approx(2.0), "day": pytest.approx(1.0), "month": pytest.approx(2.0)}
    store.settle(store.reserve("k", 0.5, {"total": 2.5}, T0 + 2 * DAY), 0.5)
    with pytest.raises(Refused) as total:
        store.reserve("k", 0.1, budgets, T0 + 3 * DAY)
    assert total.value.period == "total"


def test_period_ids_follow_the_configured_zone():
    at = T0 - 3600  # 23:00 UTC on 1 December
    assert period_ids(at, zone("UTC"))["day"] == "day:2025-12-01"
    try:
        tokyo = zone("Asia/Tokyo")
    except Exception:  # noqa: BLE001 - no time zone database on this machine
        pytest.skip("no IANA time zone database here (UTC needs none)")
    assert period_ids(at, tokyo)["day"] == "day:2025-12-02" and period_ids(at, tokyo)["month"] == "month:2025-12"


def test_a_dead_processes_hold_is_charged_at_its_bound_and_logged(store_spec):
    now = time.time()
    dead = _open(store_spec, stale_s=60)
    orphan = dead.reserve("k", 0.4, {"total": 1.0}, now)
    dead.close()
    live = _open(store_spec, stale_s=60)
    assert live.usage("k", now + 30).held["total"] == pytest.approx(0.4)  # not stale yet: still held
    use = live.usage("k", now + 61)
    assert use.spent["total"] == pytest.approx(0.4) and use.holds == 0
    (event,) = live.events()
    assert event["kind"] == "expired" and event["call_id"] == orphan.call_id and event["usd"] == pytest.approx(0.4)
    live.settle(orphan, 0.1)  # the owner was only slow: its settle is logged, not charged twice
    assert live.usage("k", now + 62).spent["total"] == pytest.approx(0.4)
    assert [e["kind"] for e in live.events()] == ["expired", "late-settle"]


def _hammer(spec, rounds: int, queue) -> None:  # a separate process
    store = _open(spec)
    charged = refused = 0.0
    for _ in range(rounds):
        try:
            hold = store.reserve("shared", 0.3, {"total": 5.0}, time.time())
        except Refused:
            refused += 1
            continue
        time.sleep(0.002)
        store.settle(hold, 0.2)
        charged += 0.2
    queue.put((charged, refused))


def test_processes_sharing_a_store_never_overshoot_by_more_than_one_hold(store_spec):
    _open(store_spec).close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(store_spec, 40, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    charged = sum(c for c, _ in results)
    spent = _open(store_spec).usage("shared", time.time()).spent["total"]
    assert spent == pytest.approx(charged)  # every settle landed once
    assert 5.0 <= spent <= 5.0 + 0.3 and sum(r for _, r in results) > 0


# ---------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("text, message", [
    ('[ledger]\nbackend = "etcd"\n', "backend must be one of sqlite, redis, memory"),
    ('[ledger]\nbackend = "redis"\n', "the redis backend needs a url"),
    ('[ledger]\nbackend = "redis"\nurl = "http://x"\n', "url must start with redis://"),
    ('[ledger]\nurl = "redis://x"\n', "url is for the redis backend"),
    ('[ledger]\ntimezone = "Mars/Olympus"\n', "unknown time zone 'Mars/Olympus'"),
    ('[ledger]\nstale_hold_s = 0\n', "stale_hold_s must be > 0"),
    ('[ledger]\nbackend = "memory"\npath = "x.sqlite3"\n', "path is for the sqlite backend"),
    ('[ledger]\nfile = "x"\n', "unknown key 'file'"),
    ('[keys.a]\nkey = "sk-aaaaaaaaaa"\ndaily_usd = -1\n', "'daily_usd' must be a number >= 0"),
    ('[keys.a]\nkey = "sk-aaaaaaaaaa"\nweekly_usd = 1\n', "unknown key 'weekly_usd'"),
])
def test_ledger_config_mistakes_are_one_clear_error(tmp_path, text, message):
    from cope.serve import load_config

    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(cfg, environ={})


def test_a_relative_ledger_path_is_relative_to_the_config_file(tmp_path):
    from cope.serve import load_config

    (tmp_path / "etc").mkdir()
    cfg = tmp_path / "etc" / "serve.toml"
    cfg.write_text('[ledger]\npath = "state/spend.sqlite3"\ntimezone = "UTC"\n[keys.a]\nkey = "sk-aaaaaaaaaa"\n'
                   'budget_usd = 2\ndaily_usd = 0.5\nmonthly_usd = 1\n')
    config = load_config(cfg, environ={})
    assert config.ledger_path() == tmp_path / "etc" / "state" / "spend.sqlite3"
    assert config.keys[0].budgets() == {"total": 2.0, "day": 0.5, "month": 1.0}


# ---------------------------------------------------------------------------
# servers


def _remote_config(tmp: Path, base_url: str, budget: float, extra: str = "", output_price: float = 2.0) -> str:
    prices = tmp / "prices.toml"
    prices.write_text(f'[models."remote"]\ninput = 1.0\noutput = {output_price}\nsource = "test"\n')
    return f'''
prices = "{prices}"

[presets.remote]
small = "{SMOL}"
large = "openai/remote"
method = "large"
base_url = "{base_url}"
max_tokens = 4

[keys.alice]
key = "sk-alice-00000001"
budget_usd = {budget}

[limits]
max_concurrent = 4
max_waiting = 32
{extra}'''


ALICE = "sk-alice-00000001"
CHAT = {"model": "remote", "messages": [{"role": "user", "content": "2+2?"}]}


def _keys_usage(config: Path, state: Path, as_json: bool = True) -> dict | str:
    env = {**os.environ, "COPE_STATE_DIR": str(state)}
    out = subprocess.run([sys.executable, "-m", "cope", "keys", "usage", "--config", str(config),
                          *(["--json"] if as_json else [])], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if as_json else out.stdout


def _ledger_section(backend: str, request, extra: str = "") -> str:
    if backend == "sqlite":
        return f"[ledger]\n{extra}"
    url, client = request.getfixturevalue("redis_server")
    client.flushall()
    return f'[ledger]\nbackend = "redis"\nurl = "{url}"\n{extra}'


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_spend_survives_kill_9_mid_call_and_a_restart(tmp_path, backend, request):
    state = tmp_path / "state"
    ledger = _ledger_section(backend, request, "stale_hold_s = 2\n")
    text = '{"role": "assistant"}'
    fast = Reply(body=completion_body({"model": "remote"}, text=text))
    with FaultServer([fast, fast, fast, Reply(delay_s=30)]) as upstream:
        config = _remote_config(tmp_path, upstream.base_url, 1.0, ledger)
        srv = ServerProcess(tmp_path, config, state=state)
        try:
            for _ in range(3):
                assert http(srv.url + "/chat/completions", CHAT, key=ALICE)[0] == 200
            def cut_off() -> None:
                try:
                    http(srv.url + "/chat/completions", CHAT, key=ALICE)
                except OSError:
                    pass  # the server was killed under it

            hung = threading.Thread(target=cut_off, daemon=True)
            hung.start()
            wait_for(lambda: upstream.count == 4, 30)  # the fourth call reached the upstream, which bills it
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(timeout=10)
        finally:
            srv.stop()
        billed = upstream.count
        restarted = ServerProcess(tmp_path, config, state=state)
        try:
            time.sleep(2.5)  # the dead process's hold is now stale
            use = http(restarted.url + "/cope/usage", key=ALICE)[2]
        finally:
            restarted.stop()
    report = _keys_usage(tmp_path / "serve.toml", state)
    (event,) = [e for e in report["events"] if e["kind"] == "expired"]
    assert billed == 4
    # the three answered calls at what they cost, the one cut off by the kill at its bound: never less than billed
    assert use["spent_usd"] == pytest.approx(3 * REMOTE_COST + event["usd"])
    assert use["spent_usd"] >= billed * REMOTE_COST and use["reserved_usd"] == 0
    (alice,) = report["keys"]
    assert alice["key"] == "alice" and alice["spent_usd"] == pytest.approx(use["spent_usd"])
    table = _keys_usage(tmp_path / "serve.toml", state, as_json=False)
    assert "alice" in table and f"${use['spent_usd']:.6f}" in table and f"event: expired call {event['call_id']}" in table


def test_keys_usage_without_a_ledger_file_or_with_memory_spend_is_clear(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[keys.a]\nkey = "sk-aaaaaaaaaa"\nbudget_usd = 1\n')
    assert "no spend recorded yet" in _keys_usage(cfg, tmp_path / "empty", as_json=False)
    assert not (tmp_path / "empty").exists()  # reading never creates the ledger
    cfg.write_text('[ledger]\nbackend = "memory"\n')
    out = subprocess.run([sys.executable, "-m", "cope", "keys", "usage", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "only the running server knows it" in out.stderr


@pytest.mark.parametrize("layout", ["two servers", "two workers", "two servers on redis"])
def test_one_budget_holds_across_processes_sharing_the_ledger(tmp_path, layout, request):
    from cope.pricing import Price, upper_bound_usd

    # Output priced high, so a call's reservation (prompt characters + 4 tokens) is close to its
    # cost (7 prompt + 2 completion tokens) and the budget is many calls: two ledgers that did not
    # share spend would let through about twice the budget.
    out_price = 1000.0
    cost = (7 * 1.0 + 2 * out_price) / 1e6
    budget = 12 * cost
    state = tmp_path / "state"
    reply = Reply(body=completion_body({"model": "remote"}, text="4"), delay_s=0.05)
    with FaultServer([reply]) as upstream:
        ledger = _ledger_section("redis" if "redis" in layout else "sqlite", request)
        config = _remote_config(tmp_path, upstream.base_url, budget, ledger, output_price=out_price)
        if layout.startswith("two servers"):
            dirs = [tmp_path / "a", tmp_path / "b"]
            for d in dirs:
                d.mkdir()
            servers = [ServerProcess(d, config, state=state) for d in dirs]
        else:
            servers = [ServerProcess(tmp_path, config, extra=("--no-access-log", "--workers", "2"), state=state)]
        try:
            urls = [s.url + "/chat/completions" for s in servers]
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda i: http(urls[i % len(urls)], CHAT, key=ALICE)[0], range(48)))
            use = http(servers[0].url + "/cope/usage", key=ALICE)[2]
        finally:
            stopped = [s.stop() for s in servers]
        bound = upper_bound_usd(Price("remote", 1.0, out_price), [upstream.seen[0].body["messages"]], 1, 4)
    assert stopped == [0] * len(servers)
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) >= 6
    assert upstream.count == codes.count(200)
    assert use["spent_usd"] == pytest.approx(upstream.count * cost)  # charged = what the upstream billed
    assert use["spent_usd"] <= budget + bound and bound < 3 * cost
