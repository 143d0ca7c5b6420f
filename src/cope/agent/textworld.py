"""TextWorld games: generated offline from a seed, cached, and played through jericho.

Why generate rather than ship games: TextWorld's challenge generators
(cooking, coin collector, treasure hunter) build a game from a seed with the
Inform 7 compiler bundled in the textworld wheel, so any seed is a new,
reproducible test game and no game files need to travel with the package.
Generation takes seconds, so each (kind, level, seed) is compiled once into
``<cope cache root>/games/textworld-<version>/`` (``$COPE_CACHE_DIR`` or
``~/.cache/cope``) and reused; the TextWorld version is in the folder name
because another generator version may turn the same seed into another game.

A game file given by path is checked before jericho sees it: jericho's
interpreter ends the whole process on a file it cannot read, which would turn
a user's typo into a crash instead of one clear error.

``textworld`` is imported only when a game is generated or started, so that
``import cope`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GameError
from .env import StepResult

__all__ = [
    "DEFAULT_KIND", "DEFAULT_LEVEL", "GAME_KINDS", "GameSpec", "TextWorldEnv", "check_game_file",
    "game_path", "games_dir", "generate_game", "max_level", "open_game", "parse_game",
]

GAME_KINDS = ("cooking", "coin_collector", "treasure_hunter")
DEFAULT_KIND = "cooking"
DEFAULT_LEVEL = 1
# numpy's RandomState, which TextWorld seeds from this number, takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

_CHALLENGE = {"cooking": "tw-cooking", "coin_collector": "tw-coin_collector", "treasure_hunter": "tw-treasure_hunter"}
_ALIASES = {"cook": "cooking", "coin": "coin_collector", "coins": "coin_collector", "treasure": "treasure_hunter"}

# The cooking challenge is driven by skill switches, not a level number; these
# presets give it a level scale like the other two (each adds a skill or
# ingredients or rooms). Level 1 is TextWorld's simplest recipe game.
_COOKING_LEVELS: tuple[dict[str, Any], ...] = (
    {"recipe": 1, "take": 1, "go": 1, "open": True},
    {"recipe": 1, "take": 1, "go": 1, "open": True, "cut": True},
    {"recipe": 2, "take": 2, "go": 1, "open": True, "cut": True, "cook": True},
    {"recipe": 2, "take": 2, "go": 6, "open": True, "cut": True, "cook": True},
    {"recipe": 3, "take": 3, "go": 9, "open": True, "cut": True, "cook": True, "drop": True},
)
_COOKING_DEFAULTS: dict[str, Any] = {
    "recipe": 1, "take": 0, "go": 1, "open": False, "cook": False, "cut": False, "drop": False,
    "recipe_seed": 0, "split": None,
}
# Levels as TextWorld defines them for the two level-based challenges.
_MAX_LEVEL = {"cooking": len(_COOKING_LEVELS), "coin_collector": 300, "treasure_hunter": 30}


def max_level(kind: str) -> int:
    """Highest level a game kind accepts."""
    return _MAX_LEVEL[_kind(kind)]


def _kind(kind: str) -> str:
    k = str(kind).strip().lower().replace("-", "_")
    if k.startswith("tw_"):
        k = k[3:]
    k = _ALIASES.get(k, k)
    if k not in GAME_KINDS:
        raise GameError(f"unknown game kind '{kind}'; known: {', '.join(GAME_KINDS)}")
    return k


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GameError(f"a game seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise GameError(f"game seed {seed} cannot be generated: seeds run from 0 to {MAX_SEED}")
    return seed


def _level(kind: str, level: Any) -> int:
    top = _MAX_LEVEL[kind]
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= top:
        raise GameError(f"level {level!r} does not exist for {kind} games; levels run from 1 to {top}")
    return level


@dataclass(frozen=True)
class GameSpec:
    """A generated game: which challenge, how hard, which seed."""

    kind: str = DEFAULT_KIND
    seed: int = 0
    level: int = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _kind(self.kind))
        _seed(self.seed)
        _level(self.kind, self.level)

    @property
    def name(self) -> str:
        return f"{self.kind}-L{self.level}-s{self.seed}"


_INT_RE = re.compile(r"^[+-]?\d+$")
_KIND_SEED_RE = re.compile(r"^([A-Za-z][\w-]*):(.*)$")


def parse_game(spec: Any, *, kind: str | None = None, level: int | None = None) -> GameSpec | Path:
    """Read what a user typed for a game: ``SEED``, ``KIND:SEED`` or a path to a game file.

    A bare integer is always a seed (write ``./7`` for a file named 7).
    ``kind`` and ``level`` apply to seeds; a ``KIND:`` prefix that disagrees
    with ``kind`` is an error rather than a silent choice.
    """
    lvl = DEFAULT_LEVEL if level is None else level
    if isinstance(spec, GameSpec):
        return spec
    if isinstance(spec, os.PathLike):
        return Path(spec)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return GameSpec(kind or DEFAULT_KIND, _seed(spec), lvl)
    if not isinstance(spec, str) or not spec.strip():
        raise GameError(f"a game is a seed, KIND:SEED or a game file path, got {spec!r}")
    text = spec.strip()
    if _INT_RE.match(text):
        return GameSpec(kind or DEFAULT_KIND, _seed(int(text)), lvl)
    path = Path(text).expanduser()
    if path.exists():
        return path
    m = _KIND_SEED_RE.match(text)
    if m and _INT_RE.match(m.group(2).strip()):
        k = _kind(m.group(1))
        if kind is not None and _kind(kind) != k:
            raise GameError(f"game '{text}' names kind {k}, but kind {_kind(kind)} was also given")
        return GameSpec(k, _seed(int(m.group(2))), lvl)
    if m and m.group(1).lower().replace("-", "_").removeprefix("tw_") in (*GAME_KINDS, *_ALIASES):
        raise GameError(f"game '{text}': the seed after '{m.group(1)}:' must be an integer")
    raise GameError(
        f"game '{text}' is neither a seed (an integer, or KIND:SEED with KIND one of "
        f"{', '.join(GAME_KINDS)}) nor an existing game file"
    )


def games_dir() -> Path:
    """Where generated games are cached, under the cope cache root (see cope.models.local_files)."""
    from ..models.local_files import cache_dir

    return cache_dir().parent / "games" / f"textworld-{_textworld_version()}"


def _textworld_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textworld")
    except PackageNotFoundError:
        raise GameError(_MISSING) from None


_MISSING = (
    "the agent task needs TextWorld, which is not installed; "
    "install cope's agent extra (textworld==1.7.0, which builds jericho with a C compiler and make)"
)


def _import_textworld() -> Any:
    try:
        import textworld
        import textworld.challenges  # noqa: F401  (registers the challenge generators)
    except ImportError as exc:
        raise GameError(f"{_MISSING} ({exc})") from None
    return textworld


def game_path(game: GameSpec) -> Path:
    """The cache path a generated game has (whether or not it exists yet)."""
    return games_dir() / f"{game.name}.z8"


def _settings(game: GameSpec) -> dict[str, Any]:
    if game.kind == "cooking":
        return {**_COOKING_DEFAULTS, **_COOKING_LEVELS[game.level - 1]}
    return {"level": game.level}


def generate_game(game: GameSpec | str | int, *, force: bool = False) -> Path:
    """Path of the compiled game for a seed, compiling it on first use.

    A cached game is reused as is; one that fails the file check (a partial
    write from an interrupted run, disk trouble) is rebuilt. The compiled files
    are moved into place only when complete, and the .z8 last, so a
    concurrent reader never sees a game without its .json.
    """
    if not isinstance(game, GameSpec):
        parsed = parse_game(game)
        if not isinstance(parsed, GameSpec):
            raise GameError(f"'{game}' is a path, not a seed to generate a game from")
        game = parsed
    target = game_path(game)
    if not force and target.is_file():
        try:
            return check_game_file(target)
        except GameError:
            pass  # damaged cache entry: build it again
    tw = _import_textworld()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{game.name}-", dir=target.parent))
    try:
        options = tw.GameOptions()
        options.seeds = game.seed
        options.path = str(tmp / target.name)
        options.file_ext = ".z8"
        options.force_recompile = True
        _, make, _ = tw.challenges.CHALLENGES[_CHALLENGE[game.kind]]
        try:
            # The generator and the Inform compiler may print; stdout belongs
            # to the caller (the CLI prints JSON there).
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not fully supported.*")
                made = make(settings=_settings(game), options=options)
                compiled = Path(tw.generator.compile_game(made, options))
        except GameError:
            raise
        except Exception as exc:  # the generators raise bare ValueError/AssertionError/...
            raise GameError(
                f"game {game.name} cannot be generated: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc
        check_game_file(compiled)
        os.replace(compiled.with_suffix(".json"), target.with_suffix(".json"))
        os.replace(compiled, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _zmachine_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete version-8 Z-machine story, or None if it is.

    Header layout (Z-machine standard 1.1, section 11): byte 0 is the version,
    the word at 0x1A the file length (in units of 8 bytes for version 8),
    the word at 0x1C the sum of all bytes from 0x40 to that length, mod 2**16.
    """
    if len(data) < 64:
        return "too short for a Z-machine header"
    if data[0] != 8:
        return f"Z-machine version byte is {data[0]}, TextWorld writes version 8"
    length = int.from_bytes(data[0x1A:0x1C], "big") * 8
    if length < 64 or length > len(data):
        return f"header says {length} bytes, file has {len(data)} (truncated?)"
    checksum = int.from_bytes(data[0x1C:0x1E], "big")
    if sum(data[0x40:length]) % 0x10000 != checksum:
        return "checksum mismatch (corrupted?)"
    return None


def check_game_file(path: str | os.PathLike[str]) -> Path:
    """The .z8 path of a playable TextWorld game, or a GameError saying why not.

    A TextWorld game is a version-8 Z-machine file plus the .json TextWorld
    writes beside it; the .json holds the game's logic, which is where the
    admissible actions and the objective come from. Either file may be given.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise GameError(f"{p} is a folder, not a game file")
    if not p.exists():
        raise GameError(f"game file not found: {p}")
    if p.suffix.lower() == ".json" and p.with_suffix(".z8").is_file():
        p = p.with_suffix(".z8")
    if p.suffix.lower() == ".ulx":
        raise GameError(f"{p} is a Glulx game; TextWorld 1.7 plays only .z8 games (generate it again as .z8)")
    if p.suffix.lower() != ".z8":
        raise GameError(f"{p} is not a TextWorld game: expected a .z8 file with its .json beside it")
    try:
        problem = _zmachine_problem(p.read_bytes())
    except OSError as exc:
        raise GameError(f"game file {p} cannot be read: {exc}") from None
    if problem:
        raise GameError(f"{p} is not a playable game file: {problem}")
    meta = p.with_suffix(".json")
    if not meta.is_file():
        raise GameError(
            f"{p} has no {meta.name} beside it; TextWorld writes one with each game and "
            "the admissible actions come from it"
        )
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise GameError(f"{meta} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or not {"world", "quests"} <= doc.keys():
        raise GameError(f"{meta} is not a TextWorld game description (no 'world'/'quests')")
    return p


# The title banner TextWorld prints at the start: lines of box-drawing ASCII.
_BANNER_LINE = re.compile(r"^[\s_|\\/$<>]*$")
# The interpreter's status line ("> ... -= Bedroom =-0/1"): the room again and the score.
_STATUS_LINE = re.compile(r"^\s*>?\s*-=.*=-\s*\d+/\d+\s*$")
_END_MARK = "*** The End ***"


def clean_observation(text: str) -> str:
    """Game output without what is noise to a model.

    Drops the ASCII title banner, bare prompts, the interpreter's status line,
    its end-of-game menu ("Would you like to RESTART...") and runs of blank
    lines; keeps the game's words.
    """
    if not text:
        return ""
    end = text.find(_END_MARK)
    if end >= 0:
        text = text[:end]
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip() == "" or not (_BANNER_LINE.match(ln) or _STATUS_LINE.match(ln))]
    out = "\n".join(lines)
    out = re.sub(r"\n{3,}", "\n\n", out)
    return out.strip()


def _one_line(action: str) -> str:
    """An action as one command: a newline would reach the parser as a second command."""
    return " ".join(str(action).split())


class TextWorldEnv:
    """A TextWorld game behind the :class:`~cope.agent.env.Environment` protocol."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = check_game_file(path)
        self.name = name or self.path.stem
        tw = _import_textworld()
        infos = tw.EnvInfos(
            admissible_commands=True, objective=True, max_score=True, score=True,
            won=True, lost=True, moves=True, extras=["walkthrough"],
        )
        try:
            with warnings.catch_warnings():
                # jericho warns that it cannot track score on TextWorld games;
                # TextWorld's own wrapper tracks it from the .json instead.
                warnings.filterwarnings("ignore", message=".*not fully supported.*")
                self._env: Any = tw.start(str(self.path), request_infos=infos)
        except Exception as exc:
            raise GameError(f"{self.path} cannot be started: {type(exc).__name__}: {exc}") from exc
        self._last: StepResult | None = None
        self._objective = ""
        self._max_score: float | None = None
        self._walkthrough: tuple[str, ...] | None = None

    # -- protocol ---------------------------------------------------------
    @property
    def objective(self) -> str:
        return self._objective

    @property
    def max_score(self) -> float | None:
        return self._max_score

    @property
    def walkthrough(self) -> tuple[str, ...] | None:
        """A winning action sequence as the generator wrote it (known after reset)."""
        return self._walkthrough

    @property
    def admissible_actions(self) -> tuple[str, ...]:
        return self._last.admissible_actions if self._last else ()

    @property
    def done(self) -> bool:
        return bool(self._last and self._last.done)

    @property
    def score(self) -> float:
        return self._last.score if self._last else 0.0

    @property
    def won(self) -> bool:
        return bool(self._last and self._last.won)

    def reset(self) -> StepResult:
        if self._env is None:
            raise GameError(f"game {self.name} is closed")
        gs = self._env.reset()
        self._objective = (gs.get("objective") or "").strip()
        ms = gs.get("max_score")
        self._max_score = float(ms) if ms is not None else None
        wt = gs.get("extra.walkthrough")
        self._walkthrough = tuple(wt) if wt else None
        self._last = self._result(gs, reward=0.0)
        return self._last

    def step(self, action: str) -> StepResult:
        if self._env is None:
            raise GameError(f"game {self.name} is closed")
        if self._last is None:
            raise GameError(f"game {self.name} has not started; call reset() first")
        if self._last.done:
            raise GameError(f"the episode of game {self.name} is over; call reset() to play again")
        command = _one_line(action)
        if not command:
            raise GameError("an action must be a non-empty command")
        before = self._last.score
        gs, _, _ = self._env.step(command)
        self._last = self._result(gs, reward=None, before=before)
        return self._last

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "TextWorldEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _result(self, gs: Any, reward: float | None, before: float = 0.0) -> StepResult:
        score = float(gs.get("score") or 0)
        won, lost = bool(gs.get("won")), bool(gs.get("lost"))
        return StepResult(
            observation=clean_observation(gs.get("feedback") or ""),
            reward=score - before if reward is None else reward,
            score=score,
            done=bool(gs.get("done")) or won or lost,
            won=won,
            lost=lost,
            admissible_actions=tuple(gs.get("admissible_commands") or ()),
            info={"moves": gs.get("moves")},
        )


def open_game(game: Any, *, kind: str | None = None, level: int | None = None) -> TextWorldEnv:
    """A ready-to-reset environment for ``SEED``, ``KIND:SEED``, a GameSpec or a game file path."""
    parsed = parse_game(game, kind=kind, level=level)
    if isinstance(parsed, GameSpec):
        return TextWorldEnv(generate_game(parsed), name=parsed.name)
    if kind is not None or level is not None:
        raise GameError(f"a kind or level applies to a seed, not to a game file ({parsed})")
    return TextWorldEnv(parsed)
