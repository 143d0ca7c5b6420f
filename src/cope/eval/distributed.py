"""`cope eval --engine ray`: a run's problems solved by Ray workers, its journal kept by the driver.

Each worker is a Ray actor that builds its solvers (and so loads its local
models) once and solves problems with the same code and per-problem seeds
as the local runner (:func:`cope.eval.solving.solve_record`), so a
problem's record does not depend on the engine or on the worker count.

Everything a run must hold in one place lives with the driver:

- the **journal**: a worker's model call is written down before the worker
  goes on. It sends the record to the run's desk (one actor) and waits until
  the driver has drained it from there, written it, and acknowledged it. A
  killed driver or worker therefore loses no paid call: ``--resume`` answers
  every journaled call from the journal and counts the priced calls that
  were in flight, as for a local run;
- the **call cache**: the desk answers calls already journaled (an earlier
  invocation's, or a dead worker's) so a problem retried elsewhere pays for
  nothing twice;
- the **budget**: ``--max-usd`` is reserved at its worst case before each
  priced call and settled after, on the desk, so no number of workers can
  overshoot it together;
- the **rate limits**: requests and tokens per minute per API model, and a
  429's Retry-After, on the desk's gate (:mod:`cope.models.gate`), so one
  worker's 429 pauses every worker's requests to that model.

A worker that dies (killed, out of memory, node lost) is replaced by a new
one and its problem sent again, at most ``attempts`` times; a problem that
keeps killing workers is journaled as an error instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, CopeError
from .solving import RunState

INSTALL_HINT = 'the Ray engine needs Ray: pip install -e ".[ray]" (or ./install.sh --ray)'

# what workers are given from the driver's environment: the offline switches (no model hub at
# run time) and cope's own settings (cache, prices, sandbox); never a key (those stay on each node)
_WORKER_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "COPE_CACHE_DIR", "COPE_PRICES",
               "COPE_SANDBOX", "COPE_SANDBOX_LANDLOCK", "COPE_SANDBOX_QUOTA", "COPE_SANDBOX_SECCOMP", "COPE_STATE_DIR")


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide a Ray run goes.

    ``address``: None starts a Ray instance in this process (``num_cpus`` of
    this machine's cores, all by default); ``"auto"`` joins the cluster this
    machine belongs to; ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` a named one.
    ``workers``: how many solving actors (default: the cluster's CPUs over
    ``worker_cpus``). ``attempts``: how many times a problem is sent out
    before a worker death is taken as its own error.
    """

    address: str | None = None
    workers: int | None = None
    worker_cpus: float = 1.0
    attempts: int = 3
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if not self.worker_cpus > 0:
            raise ConfigError(f"--worker-cpus must be positive, got {self.worker_cpus}")
        if self.attempts < 1:
            raise ConfigError(f"attempts must be at least 1, got {self.attempts}")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A named cluster must answer on its port: a clear line now, not Ray's minute of retries."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(f"--address {address}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                          f"'ray start --head' or leave --address out to run one here") from None


def connect(engine: RayEngine) -> bool:
    """Join or start Ray; True when this call started it (and so must shut it down)."""
    ray = import_ray()
    if ray.is_initialized():  # a program that set up Ray itself keeps it
        return False
    if engine.address not in (None, "auto"):
        _probe(engine.address)
    # a new local instance turns Ray's token authentication on and says so; that is Ray's default, not news
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                              "runtime_env": {"env_vars": env}}
    if engine.address is None:
        kwargs["num_cpus"] = engine.num_cpus
    try:
        # "local": a new instance of this process's own, never one a `ray start` left running
        ray.init(address=engine.address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--address {engine.address}: cannot join the Ray cluster ({first})") from None
    return True


async def run_on_ray(state: RunState, engine: RayEngine) -> None:
    """Solve ``state.todo`` on Ray workers; every record lands in ``state.journal`` on this machine."""
    ray = import_ray()
    started = connect(engine)
    try:
        await _Drive(ray, state, engine).run()
    finally:
        if started:
            ray.shutdown()


def _actors(ray: Any) -> tuple[Any, Any]:
    """The desk and worker actor classes (defined here so that Ray is imported only when used)."""
    from ..models.gate import RateGate
    from .calls import Budget, BudgetExceeded

    class Desk:
        """The run's one place on the cluster: budget, rate gate, journaled calls, records in transit."""

        def __init__(self, max_usd: float | None, spent: float, rpm: float | None, tpm: float | None,
                     calls: dict[str, Any]) -> None:
            self.budget = Budget(max_usd, spent)
            self.gate = RateGate(rpm, tpm)
            self.calls = calls
            self.pending: list[tuple[int, dict[str, Any], bool]] = []
            self.seq = self.acked = 0
            self.hits = self.real = 0
            self._cond: asyncio.Condition | None = None

        def _c(self) -> asyncio.Condition:
            if self._cond is None:
                self._cond = asyncio.Condition()
            return self._cond

        def lookup(self, key: str) -> Any:
            hit = self.calls.get(key)
            if hit is not None:
                self.hits += 1
            return hit

        def reserve(self, bound: float) -> str | None:
            try:
                self.budget.reserve(bound)
            except BudgetExceeded as exc:
                return str(exc)
            return None

        def settle(self, bound: float, usd: float) -> None:
            self.budget.settle(bound, usd)

        def wait_s(self, spec: str, tokens: int) -> float:
            return self.gate.wait_s(spec, tokens)

        def pause(self, spec: str, seconds: float) -> None:
            self.gate.pause(spec, seconds)

        async def record(self, rec: dict[str, Any], cacheable: bool) -> None:
            """Hand a record to the driver; return once it is written to the run's journal."""
            if rec.get("type") == "call":
                self.real += 1
                if cacheable:
                    self.calls[rec["key"]] = rec["generations"]
            cond = self._c()
            async with cond:
                self.seq += 1
                seq = self.seq
                self.pending.append((seq, rec, cacheable))
                cond.notify_all()
                await cond.wait_for(lambda: self.acked >= seq)

        async def drain(self, timeout_s: float) -> list[tuple[int, dict[str, Any], bool]]:
            """The records waiting to be written, after waiting up to ``timeout_s`` for one."""
            cond = self._c()
            async with cond:
                if not self.pending:
                    try:
                        await asyncio.wait_for(cond.wait_for(lambda: bool(self.pending)), timeout_s)
                    except asyncio.TimeoutError:
                        return []
                out, self.pending = self.pending, []
                return out

        async def ack(self, seq: int) -> None:
            cond = self._c()
            async with cond:
                self.acked = max(self.acked, seq)
                cond.notify_all()

        def counts(self) -> dict[str, Any]:
            return {"real": self.real, "cached": self.hits, "rate_waited_s": self.gate.waited_s,
                    "rate_pauses": self.gate.pauses}

    class Worker:
        """Builds the run's solvers once (its local models load on first use) and solves problems."""

        def __init__(self, cfg: Any, prices: Any, tasks: dict[str, Any], desk: Any) -> None:
            from .calls import JournaledModel
            from .solving import build_cope

            self.cfg, self.tasks = cfg, tasks
            self.ledger = ledger = _DeskLedger(desk)
            self.gate = _DeskGate(desk)
            self.solvers = {}
            for m in cfg.methods:
                c = build_cope(cfg, m, prices)
                for bound in c.models.values():
                    bound.model = JournaledModel(bound.model, bound.price, ledger=ledger)
                self.solvers[m] = c

        def info(self) -> dict[str, Any]:
            return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "host": socket.gethostname()}

        def desk_time(self) -> tuple[float, int]:
            """Seconds this worker waited on the desk, over how many requests."""
            return self.ledger.waited_s, self.ledger.requests

        async def solve(self, method: str, problem: Any) -> dict[str, Any]:
            from ..models.gate import request_gate
            from ..models.worker import ModelProcessDied
            from .solving import solve_record

            request_gate.set(self.gate)
            try:
                rec = await solve_record(self.cfg, self.solvers[method], self.tasks[method], method, problem)
            except BudgetExceeded as exc:
                return {"outcome": "budget", "error": str(exc)}
            except ModelProcessDied as exc:
                return {"outcome": "died", "error": str(exc)}
            except CopeError as exc:
                return {"outcome": "error", "error": str(exc)}
            return {"outcome": "result", "record": rec}

    return ray.remote(Desk), ray.remote(Worker)


class _DeskLedger:
    """A worker's view of the run's ledger (:class:`cope.eval.calls.Ledger`): the desk, remotely.

    It keeps the time spent waiting on the desk: what journaling on the driver costs a call."""

    def __init__(self, desk: Any) -> None:
        self.desk = desk
        self.waited_s = 0.0
        self.requests = 0

    async def _ask(self, ref: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await ref
        finally:
            self.waited_s += time.perf_counter() - t0
            self.requests += 1

    async def lookup(self, key: str) -> Any:
        from .calls import gen_from_dict

        hit = await self._ask(self.desk.lookup.remote(key))
        return None if hit is None else [gen_from_dict(d) for d in hit]

    async def reserve(self, bound: float) -> None:
        from .calls import BudgetExceeded

        refused = await self._ask(self.desk.reserve.remote(bound))
        if refused:
            raise BudgetExceeded(refused)

    async def settle(self, bound: float, usd: float) -> None:
        await self._ask(self.desk.settle.remote(bound, usd))

    async def record(self, record: dict[str, Any], cacheable: bool = False) -> None:
        await self._ask(self.desk.record.remote(record, cacheable))


class _DeskGate:
    """A worker's view of the run's rate gate (:class:`cope.models.gate.Gate`)."""

    def __init__(self, desk: Any) -> None:
        self.desk = desk

    async def admit(self, spec: str, tokens: int) -> None:
        wait = await self.desk.wait_s.remote(spec, tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def rate_limited(self, spec: str, seconds: float) -> None:
        self.desk.pause.remote(spec, seconds)  # for everyone; this caller sleeps its own wait anyway


class _Drive:
    """The driver's side: start actors, hand out problems, write what comes back."""

    def __init__(self, ray: Any, state: RunState, engine: RayEngine) -> None:
        self.ray, self.state, self.engine = ray, state, engine
        self.queue: list[tuple[str, Any, int]] = [(m, p, 0) for m, p in state.todo]
        self.in_flight = 0
        self.draining = True
        self.slot_locks: dict[int, asyncio.Lock] = {}

    def _width(self) -> int:
        cpus = float(self.ray.cluster_resources().get("CPU", 0))
        per = self.engine.worker_cpus
        k = self.engine.workers or max(1, int(cpus // per))
        if k * per > cpus:
            raise ConfigError(f"--workers {k} needs {k * per:g} CPUs (--worker-cpus {per:g} each); "
                              f"the Ray cluster has {cpus:g}")
        return k

    async def run(self) -> None:
        st, ray = self.state, self.ray
        if not self.queue:
            return
        t0 = time.monotonic()
        Desk, Worker = _actors(ray)
        k = self._width()
        threads = max(1, int(self.engine.worker_cpus))
        self.desk = Desk.options(num_cpus=0).remote(st.cfg.max_usd, st.budget.spent, st.cfg.rpm, st.cfg.tpm,
                                                   st.cache.entries())
        spawn = Worker.options(num_cpus=self.engine.worker_cpus, max_concurrency=max(1, st.cfg.concurrency),
                               runtime_env={"env_vars": {"COPE_THREADS": str(threads)}})
        args = [ray.put(a) for a in (st.cfg, st.prices, st.tasks)]  # stored once, for every worker and its successors
        self.spawn = lambda: spawn.remote(*args, self.desk)
        self.workers = [self.spawn() for _ in range(k)]
        self.replaced = [0] * k
        drain = asyncio.ensure_future(self._drain())
        try:
            infos = await self._start()
            startup_s = time.monotonic() - t0
            st.bar.workers = {f"w{i}": 0 for i in range(k)}
            with st.bar:
                await asyncio.gather(*(self._lane(i) for i in range(k) for _ in range(max(1, st.cfg.concurrency))))
            for m, p, _ in self.queue:  # no worker left to take them
                st.failed(m, p.id, "no Ray worker left to solve it (every worker died); --resume tries it again")
            waited = await asyncio.gather(*(_awaited(w.desk_time.remote()) for w in self.workers),
                                          return_exceptions=True)
            waited = [w for w in waited if isinstance(w, tuple)]
            self.draining = False
            await drain
            counts = await self.desk.counts.remote()
            st.counters["real"] += counts["real"]
            st.counters["cached"] += counts["cached"]
            st.extra["engine"] = {"name": "ray", "workers": k, "worker_cpus": self.engine.worker_cpus,
                                  "startup_s": round(startup_s, 3),
                                  "nodes": sorted({i["node"] for i in infos}),
                                  "rate_waited_s": round(counts["rate_waited_s"], 3),
                                  "rate_pauses": counts["rate_pauses"],
                                  # what the driver's journal costs: workers' waits on the desk
                                  "desk_s": round(sum(w[0] for w in waited), 3),
                                  "desk_requests": sum(w[1] for w in waited)}
        finally:
            self.draining = False
            if not drain.done():
                drain.cancel()
            for actor in (*self.workers, self.desk):  # their local models end with them
                ray.kill(actor)

    async def _start(self) -> list[dict[str, Any]]:
        """Each worker's pid and node, journaled (who solved what, and the pid to kill in a fault test)."""
        infos = []
        for i, w in enumerate(self.workers):
            try:
                info = await w.info.remote()
            except self.ray.exceptions.RayActorError as exc:
                raise ConfigError(f"a Ray worker could not start: {_last_line(exc)}") from None
            infos.append(info)
            self.state.journal.write({"type": "worker", "engine": "ray", "worker": i, **info})
        return infos

    async def _drain(self) -> None:
        """Write the records workers hand to the desk, in order, and release the workers waiting on them."""
        st = self.state
        while True:
            batch = await self.desk.drain.remote(0.2)
            for _, rec, cacheable in batch:
                st.journal.write(rec)
                if rec.get("type") in ("call", "call_failed"):
                    st.budget.spent += float(rec.get("usd") or 0.0)
                if cacheable and rec.get("type") == "call":
                    st.cache.put(rec["key"], rec["generations"], persist=st.persist)
            if batch:
                await self.desk.ack.remote(batch[-1][0])
            elif not self.draining:
                return

    async def _lane(self, i: int) -> None:
        """One problem at a time to worker ``i``, until none are left or the worker is gone for good."""
        st, ray = self.state, self.ray
        name = f"w{i}"
        while not st.stop:
            worker = self.workers[i]
            if not self.queue:
                if not self.in_flight:
                    return
                await asyncio.sleep(0.05)  # a problem in flight elsewhere may come back to be retried
                continue
            method, problem, tries = self.queue.pop(0)
            self.in_flight += 1
            try:
                out = await worker.solve.remote(method, problem)
            except ray.exceptions.RayActorError as exc:
                self._retry(method, problem, tries + 1, f"worker {i} died: {_last_line(exc)}")
                if not await self._back(i):
                    return
                continue
            except ray.exceptions.RayTaskError as exc:  # a fault of the solving code itself: not retried
                st.failed(method, problem.id, f"worker {i}: {_last_line(exc)}")
                st.bar.advance(method, None)
                continue
            finally:
                self.in_flight -= 1
            kind = out["outcome"]
            if kind == "result":
                st.journal.write(out["record"])
                st.bar.workers[name] += 1
                st.bar.advance(method, (out["record"]["correct"], out["record"]["cost_usd"]))
                st.succeeded += 1
            elif kind == "budget":
                from .calls import BudgetExceeded

                st.stop.append(BudgetExceeded(out["error"]))
            elif kind == "died":  # its local model died: a new worker (models load afresh), and retry
                ray.kill(worker)
                self._retry(method, problem, tries + 1, f"worker {i}: {out['error']}")
                if not await self._back(i):
                    return
            else:
                st.failed(method, problem.id, out["error"])
                st.bar.advance(method, None)

    def _retry(self, method: str, problem: Any, tries: int, why: str) -> None:
        if tries < self.engine.attempts:
            self.queue.insert(0, (method, problem, tries))  # next, so the run stays problem-major
            return
        self.state.failed(method, problem.id, f"{why} ({tries} attempts; --resume tries it again)")
        self.state.bar.advance(method, None)

    async def _back(self, i: int) -> bool:
        """Put a new worker in slot ``i`` after its worker died (at most ``attempts`` times a slot);
        whether the slot has a live worker again. Journaled, with the new process."""
        failed = self.workers[i]
        async with self.slot_locks.setdefault(i, asyncio.Lock()):  # lanes of one worker see one death once
            if self.workers[i] is not failed:
                return True  # another lane of this slot replaced it already
            while self.replaced[i] < self.engine.attempts:
                self.replaced[i] += 1
                self.ray.kill(failed)  # if it is only stuck, it goes too
                self.workers[i] = self.spawn()
                try:
                    info = await asyncio.wait_for(_awaited(self.workers[i].info.remote()), 300)
                except (self.ray.exceptions.RayActorError, asyncio.TimeoutError):
                    failed = self.workers[i]
                    continue
                self.state.journal.write({"type": "worker", "engine": "ray", "worker": i, "restarted": True, **info})
                return True
            self.state.journal.write({"type": "worker", "engine": "ray", "worker": i, "lost": True})
            return False


async def _awaited(ref: Any) -> Any:
    return await ref


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
