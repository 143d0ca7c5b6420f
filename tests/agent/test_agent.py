"""The agent task family: TextWorld games generated offline, per-step voting, episodes.

Games are real TextWorld games compiled from seeds into a temporary cache;
episodes are played by the cascade over the real SmolLM2 model. The 135M
model rarely wins, so episode tests check the loop (budget, admissible
actions, per-step stages and cost), not success; winning is checked by
playing a game's own walkthrough.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

pytest.importorskip("textworld")

from cope.api import Cope  # noqa: E402
from cope.cascade import NEVER  # noqa: E402
from cope.agent import Environment, GameSpec, TextWorldEnv, generate_game, open_game  # noqa: E402
from cope.agent.textworld import games_dir  # noqa: E402
from cope.agent.episode import run_episode  # noqa: E402
from cope.errors import CopeError, GameError  # noqa: E402
from cope.methods import cope as cope_preset  # noqa: E402
from cope.models.base import Completion  # noqa: E402
from cope.pricing import PriceTable  # noqa: E402
from cope.agent.task import AgentTask, match_action, normalize_action, step_problem  # noqa: E402
from cope.tasks.base import Plan  # noqa: E402

N = 2
# Coin collector level 3: three moves (two rooms away, then take the coin),
# so an episode of two steps can never be won and must stop on the budget.
THREE_MOVES = GameSpec("coin_collector", seed=5, level=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cope cache root, so generated games neither leak nor come from earlier runs."""
    root = tmp_path_factory.mktemp("cope-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COPE_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def three_moves(cache):
    return generate_game(THREE_MOVES)


# ---------------------------------------------------------------------------
# Generation and the cache
# ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_generated_game_is_cached_by_seed(cache, three_moves):
    assert three_moves.is_relative_to(cache) and three_moves.parent == games_dir()
    assert three_moves.with_suffix(".json").is_file()
    stamp = three_moves.stat().st_mtime_ns
    again = generate_game(GameSpec("coin", seed=5, level=3))
    assert again == three_moves and again.stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = generate_game(GameSpec("coin_collector", seed=6, level=3))
    assert other != three_moves and other.is_file()
    # A repeat seed must be the same game, or a cache keyed by seed would lie.
    with TextWorldEnv(three_moves) as a:
        a.reset()
        before = (a.objective, a.walkthrough)
    rebuilt = generate_game(THREE_MOVES, force=True)
    with TextWorldEnv(rebuilt) as b:
        b.reset()
        assert (b.objective, b.walkthrough) == before


@pytest.mark.timeout(120)
def test_damaged_cache_entry_is_rebuilt(cache):
    spec = GameSpec("treasure_hunter", seed=2, level=1)
    path = generate_game(spec)
    path.write_bytes(path.read_bytes()[:1000])  # an interrupted write
    rebuilt = generate_game(spec)
    assert rebuilt == path and rebuilt.stat().st_size > 1000
    with TextWorldEnv(rebuilt) as env:
        assert env.reset().admissible_actions


# ---------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_walkthrough_wins_and_the_episode_then_refuses_actions(three_moves):
    with open_game(THREE_MOVES) as env:
        assert isinstance(env, Environment)
        first = env.reset()
        assert env.objective and env.max_score == 1
        assert "$$" not in first.observation and "-= " in first.observation  # banner gone, room kept
        assert "look" in first.admissible_actions and not first.done
        assert len(env.walkthrough) == 3
        total = 0.0
        for action in env.walkthrough:
            assert action in env.admissible_actions
            res = env.step(action)
            total += res.reward
        assert res.done and res.won and env.won and env.done
        assert res.score == total == env.max_score
        assert "RESTART" not in res.observation and "The End" not in res.observation
        with pytest.raises(GameError, match="over"):
            env.step("look")
        env.reset()  # a new episode starts from scratch
        assert env.score == 0 and not env.done


@pytest.mark.timeout(120)
def test_game_by_path_and_by_its_json(three_moves):
    with open_game(str(three_moves)) as env:
        assert env.reset().admissible_actions
    with open_game(three_moves.with_suffix(".json")) as env:
        assert env.path == three_moves
    with pytest.raises(GameError, match="applies to a seed"):
        open_game(three_moves, level=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "game, message",
    [
        (-1, "cannot be generated: seeds run from 0"),
        ("cooking:4294967296", "cannot be generated"),
        ("pizza:3", "unknown game kind 'pizza'"),
        ("cooking:three", "must be an integer"),
        ("no/such/game.z8", "neither a seed"),
        (GameSpec("coin_collector", 1, 300), "cannot be generated: ValueError: .*100 rooms"),
    ],
)
def test_bad_game_specs(cache, game, message):
    with pytest.raises(GameError, match=message):
        open_game(game)


def test_bad_level():
    with pytest.raises(GameError, match="levels run from 1 to 30"):
        GameSpec("treasure_hunter", 1, 31)
    with pytest.raises(GameError, match="levels run from 1 to 5"):
        open_game(3, kind="cooking", level=0)


@pytest.mark.timeout(60)
def test_files_that_are_not_games(tmp_path, three_moves):
    text = tmp_path / "notes.z8"
    text.write_text("hello, this is not a story file\n" * 10)
    truncated = tmp_path / "cut.z8"
    truncated.write_bytes(three_moves.read_bytes()[:5000])
    shutil.copy(three_moves.with_suffix(".json"), truncated.with_suffix(".json"))
    alone = tmp_path / "alone.z8"
    shutil.copy(three_moves, alone)
    other = tmp_path / "game.txt"
    other.write_text("go north")
    cases = [
        (text, "not a playable game file: Z-machine version"),
        (truncated, "truncated"),
        (alone, "has no alone.json beside it"),
        (other, "not a TextWorld game"),
        (tmp_path, "is a folder"),
    ]
    for path, message in cases:
        # jericho's interpreter exits the process on an unreadable story file;
        # reaching the assertion at all shows the check ran first.
        with pytest.raises(GameError, match=message):
            open_game(path)
    assert issubclass(GameError, CopeError)


# ---------------------------------------------------------------------------
# Action normalisation, matching and the vote
# ---------------------------------------------------------------------------

ADMISSIBLE = ["close fridge", "go north", "take coin", "take red tuna from fridge", "look", "inventory"]


@pytest.mark.parametrize(
    "sample, action",
    [
        ("> Take the coin.", "take coin"),
        ("Action: go north", "go north"),
        ("**Next action:** close fridge\nbecause it is open", "close fridge"),
        ("north", "go north"),
        ("n", "go north"),
        ("get coin", "take coin"),
        ("I will go north now.", "go north"),
        ("take red tuna from the fridge", "take red tuna from fridge"),
        ("take coni", "take coin"),
        ("You can't go north, the door is locked.", None),  # negated
        ("go north and take the coin", None),  # two actions: ambiguous
        ("take red tuna", None),  # a shorter action is not a guess at a longer one
        ("eat the moon", None),
        ("The", None),
        ("", None),
    ],
)
def test_match_action(sample, action):
    assert match_action(sample, ADMISSIBLE) == action


def test_normalize_action():
    assert normalize_action("  1. `Open Fridge!` ") == "open fridge"
    assert normalize_action("```\n> Action: Take the coin.\n```") == "take the coin"


def _assess(samples, admissible=ADMISSIBLE):
    problem = step_problem("Get the coin.", "A room.", admissible)
    return AgentTask().assess(problem, [Completion(s, 3) for s in samples])


def test_vote_counts_invalid_samples_in_the_denominator():
    a = _assess(["> Take the coin.", "take coin", "I like turtles", "go north"])
    assert a.answer == "take coin"
    assert a.confidence == 0.5  # 2 of 4, not 2 of 3 valid
    assert a.support == [0, 1]
    assert a.extracted == ["take coin", "take coin", None, "go north"]
    assert a.info["votes"] == {"take coin": 2, "go north": 1} and a.info["fallback"] is False


def test_vote_tie_goes_to_the_first_sampled():
    a = _assess(["go north", "take coin", "take the coin", "north"])
    assert a.answer == "go north" and a.confidence == 0.5


def test_fallback_when_no_sample_is_admissible():
    a = _assess(["I like turtles", "dance"])
    assert a.answer == "look" and a.confidence == 0.0 and a.support == [] and a.info["fallback"]
    a = _assess(["dance"], admissible=["go west", "inventory"])
    assert a.answer == "go west"  # no "look" here: the game's first action


def test_free_form_vote_without_admissible_list():
    a = _assess(["Go north.", "n", "take coin"], admissible=[])
    assert a.answer == "go north" and a.confidence == pytest.approx(2 / 3)


def test_score_against_reference_action():
    task = AgentTask()
    p = replace(step_problem("o", "x", ADMISSIBLE), reference="take coin")
    assert task.score(p, "Take the coin.") and not task.score(p, "go north")
    with pytest.raises(CopeError, match="no reference"):
        task.score(step_problem("o", "x", ADMISSIBLE), "look")


def test_executor_prompt_has_objective_window_actions_and_plans():
    transcript = [(f"go {d}", f"Room {k}") for k, d in enumerate(["north", "east", "south", "west", "up"])]
    p = step_problem("Find the coin.", "Room 4, with a coin.", ["take coin", "look"], transcript,
                     first_observation="Room start", window=2)
    plans = [Plan("goal", "Find the coin in this room.", "m", 1), Plan("guideline", "Pick it up.", "m", 2)]
    msgs = AgentTask().executor_messages(p, plans)
    roles = [m["role"] for m in msgs]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    last = msgs[-1]["content"]
    assert "Objective: Find the coin." in last and "Room 4, with a coin." in last
    assert "- take coin\n- look" in last
    assert "Goal: Find the coin in this room." in last and "Guideline: Pick it up." in last
    shown = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert shown == ["go west", "go up"]  # only the last two steps
    assert "3 earlier steps not shown" in msgs[1]["content"] and "Room 2" in msgs[1]["content"]


# ---------------------------------------------------------------------------
# Episodes over the real model
# ---------------------------------------------------------------------------


class CheckedEnv:
    """A real game that fails the test if it is sent an action it did not list as admissible."""

    def __init__(self, env):
        self.env = env
        self.sent: list[str] = []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        assert action in self.env.admissible_actions, (action, self.env.admissible_actions)
        self.sent.append(action)
        return self.env.step(action)


def _cope(smol, tau1, tau2):
    prices = PriceTable.load()
    c = Cope(small=smol, large=_AsLarge(smol), n=N, max_tokens=200, large_price_as="gpt-4o-mini", prices=prices)
    stages = cope_preset(n=N, max_tokens=200).stages
    c.config = replace(c.config, stages=(replace(stages[0], threshold=tau1), replace(stages[1], threshold=tau2),
                                         stages[2]))
    return c


class _AsLarge:
    """The same real model under another name, so its calls are priced as a paid model."""

    spec = "local/smollm2-135m-as-large"

    def __init__(self, model):
        self.model = model

    async def generate(self, messages, params):
        return await self.model.generate(messages, params)

    async def generate_many(self, prompts, params):
        return await self.model.generate_many(prompts, params)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_episode_stops_on_the_step_budget_with_admissible_actions(smol, three_moves):
    c = _cope(smol, tau1=0.0, tau2=0.0)  # stage 1 always accepts: small model only
    seen = []
    with open_game(three_moves) as real:
        env = CheckedEnv(real)
        r = run_episode(env, c, max_steps=2, seed=3, action_max_tokens=16, on_step=seen.append)
    assert r.steps == 2 == len(r.records) == len(env.sent) and r.max_steps == 2
    assert not r.success and r.outcome == "max_steps"
    assert [rec.action for rec in r.records] == env.sent and seen == r.records
    for rec in r.records:
        assert rec.action in rec.admissible_actions and rec.stage == 1 and rec.cost_usd == 0.0
        assert rec.n_calls == 1 + N and len(rec.plans) == N  # n goals, one execution per goal
    assert r.cost_usd == 0.0
    # The executor's samples were capped for a one-line action.
    assert all(c.completion_tokens <= 16 * c.n for c in r.calls if c.role == "execute")
    assert [t["step"] for t in r.transcript] == [0, 1, 2]
    assert r.transcript[1]["action"] == r.records[0].action
    assert r.records[1].observation == r.transcript[1]["observation"]
    d = json.loads(json.dumps(r.to_dict()))
    for key in ("answer", "stage", "confidence", "cost_usd", "task", "plans", "stages", "calls", "tokens",
                "output", "success", "steps", "episode", "transcript"):
        assert key in d
    assert d["task"] == "agent" and d["answer"] == "max_steps" and d["stage_counts"] == {"1": 2}
    assert {c["step"] for c in d["calls"]} == {1, 2}
    text = r.summary()
    assert "max_steps after 2 of at most 2 steps" in text
    assert [ln.split()[0] for ln in text.splitlines()[3:5]] == ["1", "2"] and "priced as" in text


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_each_step_escalates_through_its_own_cascade(smol, three_moves):
    # Stage 1 never accepts, so every step pays for a large-model guideline
    # (stage 1 here has no goals: the loop, not the preset, is under test).
    c = _cope(smol, tau1=NEVER, tau2=0.0)
    first = replace(c.config.stages[0], plan=None)
    second = replace(c.config.stages[1], use_plans=())
    c.config = replace(c.config, stages=(first, second, c.config.stages[2]))
    with open_game(three_moves) as real:
        env = CheckedEnv(real)
        r = run_episode(env, c, max_steps=2, seed=4, action_max_tokens=12)
    assert r.steps == 2 and r.stage_counts() == {2: 2}
    for rec, res in zip(r.records, r.step_results):
        large_plans = [call for call in res.calls if call.who == "large" and call.role == "plan"]
        assert len(large_plans) == 1 and rec.cost_usd > 0  # each step paid for its own guideline
        assert rec.cost_usd == pytest.approx(sum(call.cost_usd for call in res.calls))
        assert rec.action in rec.admissible_actions
    assert r.cost_usd == pytest.approx(sum(rec.cost_usd for rec in r.records))
    assert r.tokens("large", "execute") == {"prompt": 0, "completion": 0}
    assert r.tokens("large", "plan")["completion"] > 0


def test_bad_episode_options(smol, three_moves):
    c = _cope(smol, tau1=0.0, tau2=0.0)
    with open_game(three_moves) as env:
        with pytest.raises(CopeError, match="max_steps must be an integer >= 1"):
            run_episode(env, c, max_steps=0)
        with pytest.raises(CopeError, match="cannot play with object"):
            run_episode(env, object())
        assert not env.done  # nothing was played
