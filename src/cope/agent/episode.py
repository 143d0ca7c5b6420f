"""Playing a game with the cascade: one COPE cascade per step, escalating per step.

COPE treats a multi-step task as a sequence of decisions, each settled by the
same three-stage cascade (COPE.md: agent = per-step consensus, escalation per
step). So an episode is a loop: build the step's Problem (objective, current
observation, admissible actions, recent transcript), run the cascade, play
its action, record which stage answered and what it cost, stop when the game
is over or the step budget is spent. Success, steps and cost per episode are
the metrics.

Plans are written afresh at every step, as COPE does: the small model's goals
are free, and a goal that fits the current room is worth more than one from
the first room. The large model plans only on steps that escalate, so
re-planning costs money exactly where the small model was unsure.

The executor's answer is one action, so samples are capped at
``action_max_tokens`` (default 48) unless that is None: a small model left
with 512 tokens writes an essay after its action, which is slow and billed
on a paid executor, and only the first line is read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from ..cascade import CallRecord, Cascade, EventSink, Result
from ..errors import BackendError, ConfigError
from .env import Environment
from .task import DEFAULT_WINDOW, AgentTask, fallback_action, step_problem

__all__ = ["EpisodeResult", "StepRecord", "arun_episode", "run_episode", "run_game"]

DEFAULT_MAX_STEPS = 50
ACTION_MAX_TOKENS = 48


@dataclass
class StepRecord:
    """One step: what the agent saw, what the cascade chose, how sure it was, what it cost."""

    step: int
    observation: str  # the observation the action was chosen from
    admissible_actions: list[str]
    action: str  # the action played
    fallback: bool  # no sample named an admissible action; the fallback was played
    stage: int  # cascade stage that settled the step
    confidence: float
    cost_usd: float
    latency_s: float
    reward: float
    score: float
    done: bool
    votes: dict[str, int] = field(default_factory=dict)
    plans: list[str] = field(default_factory=list)
    n_calls: int = 0


@dataclass
class EpisodeResult:
    """A played episode: outcome, per-step records, the transcript and every model call.

    ``outcome`` is "won", "lost" or "max_steps" (the budget ran out first).
    ``step_results`` keeps each step's full cascade :class:`Result`.
    """

    game: str
    objective: str
    success: bool
    outcome: str
    steps: int
    max_steps: int
    score: float
    max_score: float | None
    cost_usd: float
    latency_s: float
    records: list[StepRecord]
    transcript: list[dict[str, Any]]
    step_results: list[Result] = field(repr=False, default_factory=list)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def calls(self) -> list[CallRecord]:
        return [c for r in self.step_results for c in r.calls]

    def tokens(self, who: str | None = None, role: str | None = None) -> dict[str, int]:
        """Prompt/completion tokens over the episode, optionally for one model role and call role."""
        sel = [c for c in self.calls if (who is None or c.who == who) and (role is None or c.role == role)]
        return {"prompt": sum(c.prompt_tokens for c in sel), "completion": sum(c.completion_tokens for c in sel)}

    def stage_counts(self) -> dict[int, int]:
        """How many steps each cascade stage settled (the per-step escalation profile)."""
        out: dict[int, int] = {}
        for r in self.records:
            out[r.stage] = out.get(r.stage, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """A plain-text account for a terminal: the outcome, then one line per step."""
        top = f"{self.score:g}/{self.max_score:g}" if self.max_score is not None else f"{self.score:g}"
        lines = [
            f"game {self.game}: {self.outcome} after {self.steps} of at most {self.max_steps} steps, "
            f"score {top}, cost ${self.cost_usd:.6f}",
            f"objective: {self.objective}",
            f"{'step':>4}  {'stage':>5}  {'conf':>4}  {'USD':>10}  action",
        ]
        for r in self.records:
            mark = "  (fallback)" if r.fallback else ""
            lines.append(f"{r.step:>4}  {r.stage:>5}  {r.confidence:>4.2f}  {r.cost_usd:>10.6f}  {r.action}{mark}")
        lines += [f"note: {n}" for n in self.info.get("pricing", []) or []]  # type: ignore[union-attr]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """The math result's JSON shape, read per episode, plus the episode's own fields.

        ``answer`` is the outcome, ``stage`` the highest stage any step
        reached, ``confidence`` the mean step confidence, ``output`` the last
        observation; plans, stages and calls carry a ``step`` field.
        """
        calls = self.calls
        return {
            "answer": self.outcome,
            "stage": max((r.stage for r in self.records), default=0),
            "confidence": (sum(r.confidence for r in self.records) / len(self.records)) if self.records else 0.0,
            "cost_usd": self.cost_usd,
            "task": "agent",
            "latency_s": round(self.latency_s, 3),
            "plans": [{"step": i, **asdict(p)} for i, r in enumerate(self.step_results, 1) for p in r.plans],
            "stages": [{"step": i, **asdict(s)} for i, r in enumerate(self.step_results, 1) for s in r.stages],
            "calls": [{"step": i, **asdict(c)} for i, r in enumerate(self.step_results, 1) for c in r.calls],
            "tokens": {
                who: {role: self.tokens(who, role) for role in ("plan", "execute")}
                for who in sorted({c.who for c in calls})
            },
            "output": self.transcript[-1]["observation"] if self.transcript else "",
            **({"info": self.info} if self.info else {}),
            "game": self.game,
            "objective": self.objective,
            "success": self.success,
            "outcome": self.outcome,
            "steps": self.steps,
            "max_steps": self.max_steps,
            "score": self.score,
            "max_score": self.max_score,
            "stage_counts": {str(k): v for k, v in self.stage_counts().items()},
            "episode": [asdict(r) for r in self.records],
            "transcript": self.transcript,
        }


def _cascade(runner: Any, action_max_tokens: int | None) -> tuple[Cascade, dict[str, object]]:
    """A Cascade over the agent task from a Cope (its models and config) or a ready Cascade."""
    if isinstance(runner, Cascade):
        if runner.task.name != "agent":
            raise ConfigError(f"an episode needs a cascade over the agent task, not '{runner.task.name}'")
        return runner, {}
    config, models = getattr(runner, "config", None), getattr(runner, "models", None)
    if config is None or models is None:
        raise ConfigError(f"cannot play with {type(runner).__name__}: pass a cope.Cope or a Cascade")
    if action_max_tokens is not None:
        if isinstance(action_max_tokens, bool) or not isinstance(action_max_tokens, int) or action_max_tokens < 1:
            raise ConfigError(f"action_max_tokens must be an integer >= 1, got {action_max_tokens!r}")
        config = replace(config, stages=tuple(
            replace(st, max_tokens=min(st.max_tokens, action_max_tokens)) for st in config.stages
        ))
    info: dict[str, object] = {"pricing": list(getattr(runner, "pricing_notes", []) or [])}
    prices = getattr(runner, "prices", None)
    if prices is not None and getattr(prices, "version", None):
        info["price_table"] = prices.version
    return Cascade(config, models, AgentTask()), info


async def arun_episode(
    env: Environment,
    runner: Any,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    seed: int | None = None,
    window: int = DEFAULT_WINDOW,
    action_max_tokens: int | None = ACTION_MAX_TOKENS,
    on_event: EventSink | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> EpisodeResult:
    """Play one episode of ``env`` (reset first) with the cascade of ``runner`` (a Cope or a Cascade).

    A :class:`BackendError` mid-episode carries in ``.spent`` every call the
    episode made until then, not only the failing step's.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    cascade, info = _cascade(runner, action_max_tokens)
    t0 = time.perf_counter()
    first = env.reset()
    objective = env.objective
    obs, admissible = first.observation, first.admissible_actions
    transcript: list[dict[str, Any]] = [{"step": 0, "observation": obs}]
    pairs: list[tuple[str, str]] = []
    records: list[StepRecord] = []
    results: list[Result] = []
    last = first
    for step in range(1, max_steps + 1):
        if last.done:
            break
        problem = step_problem(
            objective, obs, admissible, pairs, first_observation=first.observation,
            step=step, window=window, id=f"{env.name}#{step}",
        )
        step_seed = None if seed is None else seed * 1009 + step
        try:
            result = await cascade.run(problem, seed=step_seed, on_event=on_event)
        except BackendError as exc:
            exc.spent = [c for r in results for c in r.calls] + list(exc.spent)
            raise
        fallback = bool(result.info.get("fallback")) or result.answer is None
        action = result.answer or fallback_action(admissible)
        last = env.step(action)
        results.append(result)
        record = StepRecord(
            step=step,
            observation=obs,
            admissible_actions=list(admissible),
            action=action,
            fallback=fallback,
            stage=result.stage,
            confidence=result.confidence,
            cost_usd=result.cost_usd,
            latency_s=round(result.latency_s, 3),
            reward=last.reward,
            score=last.score,
            done=last.done,
            votes=dict(result.info.get("votes") or {}),  # type: ignore[call-overload]
            plans=[p.text for p in result.plans],
            n_calls=len(result.calls),
        )
        records.append(record)
        transcript.append({"step": step, "action": action, "observation": last.observation})
        pairs.append((action, last.observation))
        obs, admissible = last.observation, last.admissible_actions
        if on_step is not None:
            on_step(record)
    outcome = "won" if last.won else "lost" if last.lost else "max_steps"
    return EpisodeResult(
        game=env.name,
        objective=objective,
        success=last.won,
        outcome=outcome,
        steps=len(records),
        max_steps=max_steps,
        score=last.score,
        max_score=env.max_score,
        cost_usd=sum(r.cost_usd for r in results),
        latency_s=time.perf_counter() - t0,
        records=records,
        transcript=transcript,
        step_results=results,
        info=info,
    )


def run_episode(env: Environment, runner: Any, **options: Any) -> EpisodeResult:
    """Blocking wrapper around :func:`arun_episode`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_episode(env, runner, **options))
    raise ConfigError("run_episode() was called inside a running event loop; use 'await arun_episode(...)'")


def run_game(
    game: Any, runner: Any, *, kind: str | None = None, level: int | None = None, **options: Any
) -> EpisodeResult:
    """Open a TextWorld game (``SEED``, ``KIND:SEED`` or a path), play one episode, close it.

    The entry point for ``cope solve --task agent --game ...``.
    """
    from .textworld import open_game

    env = open_game(game, kind=kind, level=level)
    try:
        return run_episode(env, runner, **options)
    finally:
        env.close()
