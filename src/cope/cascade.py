"""The cascade engine: stages as data, run over the Model and Task protocols.

A stage optionally asks a planner for plans, runs an executor on the problem
with the plans in its prompt, lets the task family assess the samples, and
either stops (confidence reaches the stage threshold) or keeps one plan for
the stages after it. COPE, the no-plan cascade and "large alone" are all just
tuples of :class:`Stage` (see ``methods.py``); nothing here knows a backend,
a dataset or a price table beyond the :class:`Price` already bound to a model.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

from .errors import BackendError, ConfigError
from .models.base import Generation, GenParams, Model, native_fields, on_answer_text, on_samples_done, on_text
from .plans import MAX_TOKENS, clean_plan, planner_messages
from .pricing import Price
from .stopping import RULES, StopRule, accepts, windows
from .tasks.base import Assessment, Plan, PlanKind, Problem, Task

Role = str  # "small" | "large" (any key of the models mapping)

# A threshold no confidence reaches: the stage never stops the cascade. Used to
# record every stage of every problem, and to force a path in tests.
NEVER = math.inf


@dataclass(frozen=True)
class PlanStep:
    """Ask ``planner`` for ``count`` plans of ``kind``; keep one as ``keep_as``."""

    planner: Role
    kind: PlanKind
    count: int = 1
    temperature: float = 0.8
    keep_as: str = ""
    # drawn window by window with the samples that use them, not all up front: a stage that
    # stops after its first window then pays for that window's plans only (no effect without windows;
    # each window's plans are seeded on their own, so a recording replays an early-stopped run)
    windowed: bool = False


@dataclass(frozen=True)
class Stage:
    """One cascade stage.

    With a plan step of ``count`` plans, the ``n`` executions are spread evenly
    over the plans (COPE stage 1: n goals, one execution each; stage 2: one
    guideline, n executions). ``use_plans`` names plans kept by earlier stages
    that go into the executor prompt too. ``threshold`` None means the stage
    always answers (a final stage).
    """

    executor: Role
    n: int = 1
    temperature: float = 0.0
    plan: PlanStep | None = None
    use_plans: tuple[str, ...] = ()
    threshold: float | None = None
    max_tokens: int = 512
    styles: tuple[str, ...] = ()
    window: int = 0
    stop: StopRule = "none"
    # the stage's place in the cascade it was cut from (0: its own place): a preset that skips
    # a stage seeds the rest as the full cascade did, so its recording replays sample for sample
    seed_index: int = 0
    # more tiers that share the stage's samples with the executor, voted together (ABC's ensembles
    # of distinct models per tier): sample i runs on (executor, *ensemble)[i mod members]
    ensemble: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        """The tiers that draw this stage's samples, the executor first."""
        return (self.executor, *self.ensemble)

    def validate(self, index: int) -> None:
        where = f"stage {index}"
        if self.n < 1:
            raise ConfigError(f"{where}: n must be >= 1, got {self.n}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"{where}: a tier is named twice among the executor and the ensemble")
        if self.ensemble and self.n < len(self.members):
            raise ConfigError(f"{where}: n ({self.n}) must give every ensemble member a sample "
                              f"({len(self.members)} members)")
        if self.window < 0:
            raise ConfigError(f"{where}: window must be >= 0, got {self.window}")
        if self.stop not in RULES:
            raise ConfigError(f"{where}: stop must be one of {', '.join(RULES)}, got '{self.stop}'")
        t = self.threshold
        if t is not None and not (0.0 <= t <= 1.0 or t == NEVER):
            raise ConfigError(f"{where}: threshold must be in [0, 1], got {t}")
        if self.plan:
            if self.plan.count < 1 or self.n % self.plan.count:
                raise ConfigError(f"{where}: n ({self.n}) must be a multiple of the plan count ({self.plan.count})")


@dataclass(frozen=True)
class CascadeConfig:
    stages: tuple[Stage, ...]
    # The paper says "exceeds"; we accept at >= by default and let users choose.
    strict: bool = False
    # (family, config) pairs: a preset calibrated per task family (cope-auto) runs the
    # family's own setting; a family not listed (and math-pot for math) runs ``stages``
    variants: tuple[tuple[str, "CascadeConfig"], ...] = ()
    # tiers beyond small and large, (name, endpoint) pairs a cascade file declares (cope.cascade_file);
    # the engine only needs a model bound under each name its stages use
    tiers: tuple[tuple[str, Any], ...] = ()

    def for_family(self, task_name: str) -> "CascadeConfig":
        """The setting this preset runs for a task family (``math-pot`` counts as ``math``)."""
        for family, cfg in self.variants:
            if task_name == family or task_name.startswith(family + "-"):
                return cfg
        return self

    def validate(self) -> None:
        if not self.stages:
            raise ConfigError("a cascade needs at least one stage")
        for i, st in enumerate(self.stages, start=1):
            st.validate(i)

    def accepts(self, confidence: float, threshold: float | None) -> bool:
        if threshold is None:
            return True
        return bool(accepts(confidence, threshold, self.strict))


@dataclass
class BoundModel:
    """A model with the price its calls are charged at."""

    model: Model
    price: Price

    @property
    def spec(self) -> str:
        return self.model.spec


@dataclass
class CallRecord:
    """One model call: who, why, how many tokens, what it cost, how long."""

    stage: int
    role: Literal["plan", "execute"]
    model: str
    who: Role
    n: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    priced_as: str = ""
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache (cached-input rate)
    reasoning_tokens: int = 0  # of completion_tokens, a reasoning model's hidden tokens (billed as output)


@dataclass
class StageReport:
    stage: int
    executor: str
    n: int
    answer: str | None
    confidence: float
    accepted: bool
    threshold: float | None
    extracted: list[str | None]
    cost_usd: float
    latency_s: float
    info: dict[str, object] = field(default_factory=dict)  # the task's assessment details
    drawn: int = 0  # samples drawn: n, or fewer when the stage stopped early
    styles: list[str] = field(default_factory=list)  # each drawn sample's executor style, if mixed
    sample_tokens: list[int] = field(default_factory=list)  # completion tokens of each drawn sample
    window_latency_s: list[float] = field(default_factory=list)  # model time of each drawn window


@dataclass
class Result:
    """What a solve returns: the answer and the full account of how it was reached."""

    answer: str | None
    stage: int
    confidence: float
    cost_usd: float
    calls: list[CallRecord]
    plans: list[Plan]
    stages: list[StageReport]
    output: str
    task: str
    latency_s: float
    info: dict[str, object] = field(default_factory=dict)
    # the sample whose text is returned (its tokens and logprobs where the backend gave them);
    # not part of to_dict: journals and reports keep the per-stage summaries
    answer_sample: Any = field(default=None, repr=False, compare=False)

    def tokens(self, who: Role | None = None, role: str | None = None) -> dict[str, int]:
        """Prompt/completion tokens, optionally for one model role and call role."""
        sel = [c for c in self.calls if (who is None or c.who == who) and (role is None or c.role == role)]
        return {
            "prompt": sum(c.prompt_tokens for c in sel),
            "completion": sum(c.completion_tokens for c in sel),
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "answer": self.answer,
            "stage": self.stage,
            "confidence": self.confidence,
            "cost_usd": self.cost_usd,
            "task": self.task,
            "latency_s": round(self.latency_s, 3),
            "plans": [asdict(p) for p in self.plans],
            # NEVER (infinity) is not JSON: a stage that could not accept says "never"
            "stages": [{**asdict(s), "threshold": "never" if s.threshold == NEVER else s.threshold}
                       for s in self.stages],
            "calls": [asdict(c) for c in self.calls],
            "tokens": {
                who: {r: self.tokens(who, r) for r in ("plan", "execute")}
                for who in sorted({c.who for c in self.calls})
            },
            "output": self.output,
            **({"info": self.info} if self.info else {}),
        }


@dataclass
class Event:
    """Progress notification for live displays."""

    kind: Literal["stage", "plan", "execute", "done"]
    stage: int
    n_stages: int
    who: Role
    done: int
    total: int
    cost_usd: float
    message: str = ""


EventSink = Callable[[Event], None]


class Cascade:
    """Runs a :class:`CascadeConfig` for one problem at a time."""

    def __init__(self, config: CascadeConfig, models: dict[Role, BoundModel], task: Task) -> None:
        config = config.for_family(task.name)
        config.validate()
        for i, st in enumerate(config.stages, start=1):
            roles = [*st.members] + ([st.plan.planner] if st.plan else [])
            for r in roles:
                if r not in models:
                    raise ConfigError(f"stage {i} uses model role '{r}', which is not configured")
        self.config = config
        self.models = models
        self.task = task

    async def run(
        self, problem: Problem | str, *, seed: int | None = None, on_event: EventSink | None = None
    ) -> Result:
        problem = Problem.of(problem)
        if not problem.text or not problem.text.strip():
            raise ConfigError("the problem is empty")
        t0 = time.perf_counter()
        calls: list[CallRecord] = []
        kept: dict[str, Plan] = {}
        used_plans: list[Plan] = []
        reports: list[StageReport] = []
        stages = self.config.stages
        emit = on_event or (lambda e: None)
        spent = lambda: sum(c.cost_usd for c in calls)  # noqa: E731
        assessment: Assessment | None = None
        final_stage = 0
        for idx, st in enumerate(stages, start=1):
            ts = time.perf_counter()
            n_calls_before = len(calls)
            stage_seed = None if seed is None else seed * 1000 + (st.seed_index or idx) * 100
            emit(Event("stage", idx, len(stages), st.executor, 0, st.n, spent()))
            try:
                new_plans = [] if self._plans_windowed(st) else await self._plan(
                    problem, st, idx, stage_seed, calls, emit)
                completions, plan_of_sample, styles, assessment, window_s, prompt_of = await self._execute(
                    problem, st, idx, kept, new_plans, stage_seed, calls, emit)
            except BackendError as exc:
                exc.spent = list(calls)
                raise
            accepted = self.config.accepts(assessment.confidence, st.threshold)
            final_stage = idx
            used_plans += new_plans
            if new_plans and st.plan and st.plan.keep_as:
                # Keep a plan that led to the majority answer (the first one).
                pick = plan_of_sample[assessment.support[0]] if assessment.support else 0
                pick = min(pick, len(new_plans) - 1)
                chosen = new_plans[pick]
                kept[st.plan.keep_as] = Plan(chosen.kind, chosen.text, chosen.model, chosen.stage, st.plan.keep_as)
                used_plans[len(used_plans) - len(new_plans) + pick] = kept[st.plan.keep_as]
            stage_calls = calls[n_calls_before:]
            reports.append(
                StageReport(
                    stage=idx,
                    executor=" + ".join(self.models[t].spec for t in st.members),
                    n=st.n,
                    answer=assessment.answer,
                    confidence=assessment.confidence,
                    accepted=accepted,
                    threshold=st.threshold,
                    extracted=list(assessment.extracted),
                    cost_usd=sum(c.cost_usd for c in stage_calls),
                    latency_s=time.perf_counter() - ts,
                    info=dict(assessment.info),
                    drawn=len(completions),
                    styles=list(styles),
                    sample_tokens=[c.completion_tokens for c in completions],
                    window_latency_s=window_s,
                )
            )
            verdict = "accepted" if accepted else "escalating"
            early = f" after {len(completions)} of {st.n} samples" if len(completions) < st.n else ""
            emit(Event("done", idx, len(stages), st.executor, len(completions), st.n, spent(),
                       f"answer {assessment.answer}, confidence {assessment.confidence:.2f}, {verdict}{early}"))
            if accepted:
                break
        assert assessment is not None
        info = dict(assessment.info)
        # the sample behind the returned text (the one whose text it is, else the majority's first):
        # how it ended ("length" when max_tokens cut it: a server answers finish_reason from this,
        # never a constant "stop") and its own tokens (what a client received, beside the bill)
        k = next((i for i, c in enumerate(completions) if c is not None and assessment.output
                  and c.text == assessment.output), None)
        if k is None and assessment.support and assessment.support[0] < len(completions):
            k = assessment.support[0]
        backing = completions[k] if k is not None else None
        if backing is not None:
            info["finish_reason"] = backing.finish_reason
            prompt, cached, reasoning = prompt_of[k]
            info["answer_tokens"] = {"prompt": prompt, "completion": completions[k].completion_tokens,
                                     **({"cached": cached} if cached else {}),
                                     **({"reasoning": reasoning} if reasoning else {})}
        return Result(
            answer=assessment.answer,
            stage=final_stage,
            confidence=assessment.confidence,
            cost_usd=spent(),
            calls=calls,
            plans=used_plans,
            stages=reports,
            output=assessment.output,
            task=self.task.name,
            latency_s=time.perf_counter() - t0,
            info=info,
            answer_sample=backing,
        )

    @contextmanager
    def _progress(self, emit: EventSink, kind, idx: int, who: Role, total: int, calls, what: str):
        """Emit an event now and each time the backend reports finished samples."""
        done = 0
        spent = sum(c.cost_usd for c in calls)

        def hook(k: int) -> None:
            nonlocal done
            done += k
            emit(Event(kind, idx, len(self.config.stages), who, done, total, spent, what))

        emit(Event(kind, idx, len(self.config.stages), who, 0, total, spent, what))
        token = on_samples_done.set(hook)
        try:
            yield
        finally:
            on_samples_done.reset(token)

    def _record(self, calls: list[CallRecord], stage: int, role: str, who: Role, gen: Generation, n: int) -> None:
        bound = self.models[who]
        calls.append(
            CallRecord(
                stage=stage,
                role=role,  # type: ignore[arg-type]
                model=bound.spec,
                who=who,
                n=n,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                cost_usd=bound.price.cost_of(gen),
                latency_s=gen.latency_s,
                priced_as=bound.price.note,
                cached_tokens=int(gen.extra.get("cached_tokens") or 0),
                reasoning_tokens=int(gen.extra.get("reasoning_tokens") or 0),
            )
        )

    @staticmethod
    def _plans_windowed(st: Stage) -> bool:
        """Whether the stage's plans are drawn with each window (see :attr:`PlanStep.windowed`)."""
        # with stop "none" too: a recording draws every window's plans as the live run drew its first
        return bool(st.plan and st.plan.windowed and st.plan.count > 1 and st.window)

    @contextmanager
    def _paid_on_failure(self, calls: list[CallRecord], stage: int, role: str, who: Role):
        """A failed call's answered part (``BackendError.spent``: generations the API billed, e.g. the
        prompts of a ``generate_many`` that came back before another failed) joins the call records,
        so the error the caller sees carries every cost, not only the calls that fully succeeded."""
        try:
            yield
        except BackendError as exc:
            for g in exc.spent:
                if isinstance(g, Generation):
                    self._record(calls, stage, role, who, g, len(g.completions))
            if exc.tier is None:  # one line that says which tier's endpoint failed
                exc.tier = who
                exc.args = (f"the {who} model ({role}, stage {stage}): {exc.args[0] if exc.args else exc}",)
            raise

    async def _plan(self, problem, st: Stage, idx, seed, calls, emit, count: int | None = None) -> list[Plan]:
        if st.plan is None:
            return []
        ps = st.plan
        count = count or ps.count
        bound = self.models[ps.planner]
        params = GenParams(n=count, temperature=ps.temperature, max_tokens=MAX_TOKENS[ps.kind], seed=seed)
        with self._progress(emit, "plan", idx, ps.planner, count, calls, f"{ps.kind}s"):
            asks = self.task.plan_asks
            with self._paid_on_failure(calls, idx, "plan", ps.planner):
                gen = await bound.model.generate(planner_messages(problem, ps.kind, asks), params)
        self._record(calls, idx, "plan", ps.planner, gen, count)
        return [Plan(ps.kind, clean_plan(c.text, ps.kind), bound.spec, idx) for c in gen.completions]

    def _styles(self, st: Stage) -> tuple[str, ...]:
        """The stage's executor styles that this task family offers; none unless two or more remain."""
        offered = self.task.executor_styles
        chosen = tuple(x for x in st.styles if x in offered)
        return chosen if len(chosen) > 1 else ()

    async def _assess(self, problem: Problem, completions, styles) -> Assessment:
        kw = {"styles": list(styles)} if styles else {}
        if styles or self.task.slow_assess:  # e.g. running programs: keep the loop free
            return await asyncio.to_thread(self.task.assess, problem, completions, **kw)
        return self.task.assess(problem, completions, **kw)

    def _settled(self, st: Stage, assessment: Assessment, drawn: int, need_answer: bool) -> bool:
        """Whether the samples not drawn yet could still change the stage's decision (see cope.stopping)."""
        if drawn >= st.n:
            return True
        if st.stop == "none":
            return False
        return bool(self.task.settled(assessment, drawn, st.n, st.threshold, strict=self.config.strict,
                            need_answer=need_answer, rule=st.stop))

    async def _execute(self, problem, st: Stage, idx, kept, new_plans, seed, calls, emit):
        """Draw the stage's samples window by window; stop once the rest cannot matter.

        Sample i runs on plan i // (n / plans) and style i mod styles; the
        samples of a window that share a prompt go into one call (several
        prompts with the same count into one ``generate_many``), so one
        window with no styles is exactly one call, as before windows existed.
        With windowed plans, ``new_plans`` starts empty and grows by the plans
        each window's samples use, drawn just before them.
        """
        members = st.members
        base = [kept[name] for name in st.use_plans if name in kept]
        seed_x = None if seed is None else seed + 1
        styles = self._styles(st)
        n = st.n
        windowed = self._plans_windowed(st)
        n_plans = st.plan.count if windowed and st.plan else len(new_plans)
        per = n // n_plans if n_plans else n
        slot_plan = [i // per if n_plans else 0 for i in range(n)]
        slot_style = [styles[i % len(styles)] if styles else "" for i in range(n)]
        slot_tier = [members[i % len(members)] for i in range(n)]
        prompts: dict[tuple[int, str], list] = {}

        def prompt(key: tuple[int, str]) -> list:
            if key not in prompts:
                # a planner that returned fewer plans than asked: its last plan serves the rest
                plans = base + ([new_plans[min(key[0], len(new_plans) - 1)]] if new_plans else [])
                prompts[key] = (self.task.executor_messages(problem, plans, style=key[1]) if key[1]
                                else self.task.executor_messages(problem, plans))
            return prompts[key]

        # A stage that keeps one of several plans keeps the majority's: its answer matters even when it escalates.
        need_answer = bool(st.plan and st.plan.keep_as and n_plans > 1)
        can_stop = st.stop != "none"  # a family without a settled rule (the base class) never stops early
        outputs: list = [None] * n
        # per sample: its call's prompt tokens, of them cached, and its hidden reasoning tokens (known
        # per sample only when the call drew it alone)
        prompt_of: list[tuple[int, int, int]] = [(0, 0, 0)] * n
        window_s: list[float] = []
        # the answer streams as it decodes only where it is one generation whose text is the answer:
        # the last stage, one sample, a family that returns the text as written (Task.streams)
        answer_hook = on_answer_text.get()
        streamed = (answer_hook is not None and self.task.streams and n == 1 and not styles
                    and idx == len(self.config.stages))
        drawn = 0
        assessment: Assessment | None = None
        with self._progress(emit, "execute", idx, st.executor, n, calls, "samples"):
            for w, (lo, hi) in enumerate(windows(n, st.window)):
                missing = slot_plan[hi - 1] + 1 - len(new_plans)
                if windowed and missing > 0:
                    # window 0 keeps the stage seed; later windows' plans get their own streams
                    plan_seed = None if seed is None else seed + w * 1009 + 53 * (w > 0)
                    new_plans += await self._plan(problem, st, idx, plan_seed, calls, emit, count=missing)
                groups: dict[tuple[int, str, str], list[int]] = {}
                for i in range(lo, hi):
                    groups.setdefault((slot_plan[i], slot_style[i], slot_tier[i]), []).append(i)
                # one call per tier and count (a lone executor: one per count, seeded as before ensembles)
                by_count: dict[tuple[str, int], list[tuple[int, str, str]]] = {}
                for key, slots in groups.items():
                    by_count.setdefault((key[2], len(slots)), []).append(key)
                window_s.append(0.0)
                for g, ((tier, count), keys) in enumerate(by_count.items()):
                    bound = self.models[tier]
                    # each window (and each call within one) on its own stream; window 0's first call
                    # keeps the stage seed, so one window is seeded as before windows existed
                    call_seed = None if seed_x is None else seed_x + w * 1009 + g * 101
                    params = GenParams(n=count, temperature=st.temperature, max_tokens=st.max_tokens,
                                       seed=call_seed, logprobs=self.task.needs_logprobs)
                    listening = on_text.set(answer_hook if streamed else None)
                    native = native_fields.set(self.task.native_fields())
                    try:
                        with self._paid_on_failure(calls, idx, "execute", tier):
                            if len(keys) > 1:
                                gens = await bound.model.generate_many([prompt(k[:2]) for k in keys], params)
                            else:
                                gens = [await bound.model.generate(prompt(keys[0][:2]), params)]
                    finally:
                        on_text.reset(listening)
                        native_fields.reset(native)
                    for key, gen in zip(keys, gens):
                        window_s[-1] += gen.latency_s
                        self._record(calls, idx, "execute", tier, gen, count)
                        for i, c in zip(groups[key], gen.completions):
                            outputs[i] = c
                            prompt_of[i] = (gen.prompt_tokens, int(gen.extra.get("cached_tokens") or 0),
                                            int(gen.extra.get("reasoning_tokens") or 0)
                                            if len(gen.completions) == 1 else 0)
                drawn = hi
                if hi < n and not can_stop:
                    continue
                assessment = await self._assess(problem, outputs[:hi], slot_style[:hi] if styles else ())
                if self._settled(st, assessment, hi, need_answer):
                    break
        assert assessment is not None
        return (outputs[:drawn], slot_plan[:drawn], (slot_style[:drawn] if styles else []), assessment, window_s,
                prompt_of[:drawn])
