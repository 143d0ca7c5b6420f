"""Server configuration: presets, API keys with budgets, and limits, from TOML.

Everything a deployment decides is data in one file, checked when the server
starts: a typo in a preset, an unknown task or a model without a price stops
the server with one clear line instead of failing the first request an hour
later. Models themselves are not loaded here (that happens on first use).

Client keys come from the file's ``[keys.NAME]`` tables and from the
environment variable ``COPE_API_KEYS`` (comma-separated), together. A key in
both is one key: the file's entry, with its name and budget, wins, so the
variable can hold every key while the file gives some of them budgets. Keys
only in the variable have no budget; they are labelled ``COPE_API_KEYS[i]``
(their position in the list), never by their text.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..solver import SolverConfig

# System (and "developer") messages: a task family's own system prompt fixes
# the output format its confidence signal reads (\boxed{} for voting), so by
# default a client's system prompt is left out; "prepend" puts its text before
# the problem instead, for clients whose instructions matter.
SYSTEM_MODES = ("drop", "prepend")
# Requests with ``tools``: "large" sends them to the large tier alone (one greedy sample, the
# default: a tool call has side effects, so the strongest tier decides); "cascade" lets n small
# samples vote on the call (name and arguments) and escalates to the large tier when they disagree.
TOOL_POLICIES = ("large", "cascade")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

# The family the default model ``cope`` (and a new preset without a task) serves: chat.
CHAT_TASK = "open"

# Comma-separated client keys, used together with the config file's [keys].
ENV_KEYS = "COPE_API_KEYS"


@dataclass(frozen=True)
class Preset:
    """One model name clients can ask for, and the Cope it stands for.

    ``price_as`` charges the large model at another model's price row (None:
    the library's default, which prices the offline default large model as
    gpt-4o-mini; "": its own price). ``api_key_env`` names the environment
    variable holding the upstream key, so no secret sits in the file.
    """

    name: str
    small: str
    large: str
    task: str = "math"
    method: str = "cope"
    n: int = 8
    tau1: float | None = None  # None: the task family's own (math 0.75 / 0.5, code 1.0; cope-auto: calibrated)
    tau2: float | None = None
    max_tokens: int = 512
    price_as: str | None = None
    small_price_as: str | None = None
    base_url: str | None = None  # shared by both models (each model's own URL below wins)
    api_key_env: str | None = None  # shared by both models (each model's own variable below wins)
    small_base_url: str | None = None
    large_base_url: str | None = None
    small_key_env: str | None = None
    large_key_env: str | None = None
    system: str = "drop"
    tools: str = "large"  # see TOOL_POLICIES
    # declared routing: (regular expression, task family) pairs tried in order on the last user
    # message; the first that matches answers with its family, else the preset's task
    route: tuple[tuple[str, str], ...] = ()
    timeout_s: float | None = None  # None: the server-wide limit
    request_timeout_s: float | None = None  # per API request attempt (None: the backend's 120 s)
    n_threads: int | None = None
    # a preset file from ``cope calibrate --write-preset``: its cascade replaces method, n and taus
    preset_file: str | None = None
    # a cascade file (``cope cascade show``): its stages replace method, n and taus
    cascade_file: str | None = None
    # tiers beyond small and large, by name: a [models.NAME] table or a spec (a cascade file's stages use them)
    tiers: tuple[tuple[str, str], ...] = ()
    # the endpoints of the roles that name a [models.NAME] table (set by the loader, not a file key)
    endpoints: tuple[tuple[str, Any], ...] = ()

    def endpoint(self, role: str) -> Any:
        """The :class:`~cope.models.endpoint.Endpoint` a role (small, large or a tier) runs on."""
        from ..models.endpoint import Endpoint

        own = dict(self.endpoints)
        if role in own:
            return own[role]
        if role == "small":
            return Endpoint(self.small, base_url=self.small_base_url, key_env=self.small_key_env)
        if role == "large":
            return Endpoint(self.large, base_url=self.large_base_url, key_env=self.large_key_env)
        return Endpoint(dict(self.tiers)[role])

    def roles(self) -> list[str]:
        """small, large and the preset's own tiers, in that order."""
        return ["small", "large", *(name for name, _ in self.tiers)]

    @property
    def solver(self) -> SolverConfig:
        """The preset's solver configuration (method, n, thresholds, preset file), as the library builds it."""
        return SolverConfig(method=self.method, n=self.n, tau1=self.tau1, tau2=self.tau2, max_tokens=self.max_tokens,
                            preset_file=self.preset_file or None, cascade_file=self.cascade_file or None)

    def cope_kwargs(self, prices: Any) -> dict[str, Any]:
        """Keyword arguments for :class:`cope.Cope`."""
        kwargs: dict[str, Any] = dict(
            small=self.endpoint("small"), large=self.endpoint("large"), solver=self.solver,
            small_price_as=self.small_price_as or None, prices=prices, base_url=self.base_url,
            n_threads=self.n_threads, timeout=self.request_timeout_s,
        )
        if self.tiers:
            kwargs["tiers"] = {name: self.endpoint(name) for name, _ in self.tiers}
        if self.price_as is not None:
            kwargs["large_price_as"] = self.price_as or None
        if self.api_key_env:
            kwargs["api_key"] = os.environ.get(self.api_key_env)
        return kwargs

    def thresholds(self) -> list[float | None]:
        """The stage thresholds this preset's cascade runs for its task (no model is loaded)."""
        from ..tasks import get_task

        return [st.threshold for st in self.solver.cascade(get_task(self.task)).stages]


@dataclass(frozen=True)
class KeyConfig:
    """A client key: a label for logs and reports, the secret, optional budgets.

    ``account`` is the id its spend is kept under in the ledger (default: the
    name, so a rotated secret keeps its spend); keys from COPE_API_KEYS alone
    are kept under a digest of the secret, as their labels are positions.
    """

    name: str
    secret: str
    budget_usd: float | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    account: str = ""

    def budgets(self) -> dict[str, float]:
        """The budgets set, by period kind (total, day, month)."""
        from .spend import budgets_of

        return budgets_of({"budget_usd": self.budget_usd, "daily_usd": self.daily_usd,
                           "monthly_usd": self.monthly_usd})


LEDGER_BACKENDS = ("sqlite", "redis", "memory")

# The redis backend's URL when the config file does not give one (it may hold a password).
LEDGER_URL_ENV = "COPE_LEDGER_URL"

# Where the server keeps state (the SQLite ledger) unless the config says: $COPE_STATE_DIR,
# else $XDG_STATE_HOME/cope, else ~/.local/state/cope.
STATE_ENV = "COPE_STATE_DIR"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV]).expanduser()
    base = Path(env["XDG_STATE_HOME"]).expanduser() if env.get("XDG_STATE_HOME") else Path.home() / ".local/state"
    return base / "cope"


@dataclass(frozen=True)
class LedgerConfig:
    """Where spend is kept: ``sqlite`` (a file, shared by the host's workers; the default),
    ``redis`` (a Redis server at ``url``, shared by replicas on several hosts) or ``memory``
    (this process only, reset on restart). ``timezone`` is where days and months
    turn; a hold older than ``stale_hold_s`` was left by a process that died and is charged
    at its bound (None: twice the longest solve time limit, plus a minute)."""

    backend: str = "sqlite"
    path: str | None = None  # sqlite: None means <state dir>/ledger.sqlite3
    url: str | None = None  # redis: redis://[:password@]host:port/db; None means $COPE_LEDGER_URL
    timezone: str = "UTC"
    stale_hold_s: float | None = None


@dataclass(frozen=True)
class Limits:
    """Protection for a shared machine: bounded work in flight and bounded input."""

    max_concurrent: int = 2  # solves running at once
    max_waiting: int = 16  # admitted requests waiting for a slot; more get 429
    max_input_chars: int = 50_000  # characters over all messages
    max_messages: int = 256  # messages per request (system, history and the problem)
    max_body_bytes: int = 1 << 20
    timeout_s: float = 600.0  # per solve; a preset may set its own


@dataclass
class ServerConfig:
    presets: dict[str, Preset]
    keys: list[KeyConfig] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    prices: str | None = None  # a price file on top of the shipped table
    source: str = "built-in defaults"
    env_keys: int = 0  # how many of ``keys`` came from COPE_API_KEYS alone
    models: dict[str, Any] = field(default_factory=dict)  # the file's [models.NAME] endpoints

    def secrets(self) -> list[str]:
        """Every secret the server knows (client keys, upstream keys), for scrubbing logs."""
        found = [k.secret for k in self.keys]
        for p in self.presets.values():
            for var in (p.api_key_env, p.small_key_env, p.large_key_env,
                        *(ep.key_env for _, ep in p.endpoints)):
                if var:
                    found.append(os.environ.get(var, ""))
        for ep in self.models.values():
            if ep.key_env:
                found.append(os.environ.get(ep.key_env, ""))
        from ..models.registry import COMPATIBLE

        for var in ["OPENAI_API_KEY", *(c.key_env for c in COMPATIBLE.values() if c.key_env)]:
            found.append(os.environ.get(var, ""))
        url = self.ledger_url()
        if url:
            from urllib.parse import urlsplit

            found.append(urlsplit(url).password or "")
        return [s for s in found if len(s) >= 8]

    def timeout_for(self, preset: Preset) -> float:
        return preset.timeout_s if preset.timeout_s is not None else self.limits.timeout_s

    def ledger_path(self) -> Path:
        """The SQLite ledger's file."""
        return Path(self.ledger.path).expanduser() if self.ledger.path else state_dir() / "ledger.sqlite3"

    def ledger_url(self) -> str | None:
        """The redis backend's URL: the config's, else $COPE_LEDGER_URL."""
        if self.ledger.backend != "redis":
            return None
        return self.ledger.url or os.environ.get(LEDGER_URL_ENV) or None

    def stale_hold_s(self) -> float:
        if self.ledger.stale_hold_s is not None:
            return self.ledger.stale_hold_s
        longest = max([self.timeout_for(p) for p in self.presets.values()] or [self.limits.timeout_s])
        return 2 * longest + 60

    def open_ledger(self) -> Any:
        """The spend store this config names (opened: the SQLite file is created if missing)."""
        from .stores import open_store

        import sqlite3

        path = str(self.ledger_path()) if self.ledger.backend == "sqlite" else None
        try:
            return open_store(self.ledger.backend, path=path, url=self.ledger_url(), tz=self.ledger.timezone,
                              stale_s=self.stale_hold_s())
        except sqlite3.Error as exc:
            raise ConfigError(f"ledger {path}: {exc} (set [ledger] path, or {STATE_ENV})") from None
        except ImportError:
            raise ConfigError("the redis ledger needs the redis package: pip install redis") from None
        except Exception as exc:  # redis: connection refused, bad password, unknown host
            if type(exc).__module__.startswith("redis"):
                from urllib.parse import urlsplit

                where = urlsplit(self.ledger_url() or "")
                raise ConfigError(f"ledger redis://{where.hostname}:{where.port or 6379}: {exc}") from None
            raise


_PRESET_KEYS = {f.name for f in fields(Preset)} - {"name", "endpoints"}
_LIMIT_KEYS = {f.name for f in fields(Limits)}
_LEDGER_KEYS = {f.name for f in fields(LedgerConfig)}
_TOP_KEYS = {"prices", "defaults", "presets", "keys", "limits", "ledger", "models"}


def _types(name: str) -> tuple[type, ...]:
    if name in ("small", "large", "task", "method", "price_as", "small_price_as", "base_url",
                "api_key_env", "small_base_url", "large_base_url", "small_key_env", "large_key_env", "system", "tools", "preset_file",
                "cascade_file", "backend", "path", "url", "timezone"):
        return (str,)
    if name in ("n", "max_tokens", "n_threads", "max_concurrent", "max_waiting", "max_input_chars",
                "max_messages", "max_body_bytes"):
        return (int,)
    return (int, float)


def _check_value(where: str, key: str, value: Any) -> Any:
    kinds = _types(key)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a string" if kinds == (str,) else "an integer" if kinds == (int,) else "a number"
        raise ConfigError(f"{where}: '{key}' must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be finite, got {value!r}")
    return value


def _table(where: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
    return {k: (_tier_map(where, v) if k == "tiers" else _routes(where, v) if k == "route" else _check_value(where, k, v))
            for k, v in value.items()}


def _routes(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A preset's ``[[presets.NAME.route]]`` tables: ``pattern`` (a regular expression searched in
    the last user message) and ``task`` (the family that answers when it matches)."""
    from ..tasks import TASKS

    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ConfigError(f"{where}: 'route' must be [[...route]] tables with pattern and task")
    out = []
    for i, r in enumerate(value, start=1):
        at = f"{where}: route {i}"
        unknown = sorted(set(r) - {"pattern", "task"})
        if unknown or not isinstance(r.get("pattern"), str) or not isinstance(r.get("task"), str):
            raise ConfigError(f"{at}: needs pattern = \"regex\" and task = \"family\" (and nothing else)")
        try:
            re.compile(r["pattern"])
        except re.error as exc:
            raise ConfigError(f"{at}: pattern is not a regular expression: {exc}") from None
        if r["task"] not in TASKS:
            raise ConfigError(f"{at}: unknown task '{r['task']}'; available: {', '.join(TASKS)}")
        out.append((r["pattern"], r["task"]))
    return tuple(out)


def _tier_map(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A preset's ``tiers = { medium = "cheap-api" }``: tier names to model tables or specs."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'tiers' must be a table of tier = model, e.g. tiers = {{ medium = \"gpt\" }}")
    for name, model in value.items():
        if name in ("small", "large"):
            raise ConfigError(f"{where}: tiers: small and large are the preset's small and large keys")
        if not name.isidentifier():
            raise ConfigError(f"{where}: tiers: a tier name is letters, digits and _, got '{name}'")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{where}: tiers: '{name}' must name a [models.NAME] table or a model spec")
    return tuple(value.items())


def _models(where: str, table: Any) -> dict[str, Any]:
    """``[models.NAME]`` tables: each a named endpoint that presets refer to by its name."""
    from ..models.endpoint import from_table

    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'models' must hold [models.NAME] tables")
    out: dict[str, Any] = {}
    for name, row in table.items():
        at = f"{where}: [models.{name}]"
        if not _NAME_RE.match(name):
            raise ConfigError(f"{at}: a model name is letters, digits and . _ : - (at most 64; a spec has a '/')")
        out[name] = from_table(at, row, f"model {name}", spec_hint=" (e.g. openai/gpt-4o-mini)")
    return out


def _resolve_models(where: str, preset: Preset, models: dict[str, Any]) -> Preset:
    """Replace a role's [models.NAME] name by that table's spec, keeping the table as the role's endpoint."""
    from ..models.endpoint import Endpoint

    at = f"{where}: [presets.{preset.name}]"
    changes: dict[str, Any] = {}
    endpoints: list[tuple[str, Any]] = []
    for role in ("small", "large"):
        name = getattr(preset, role)
        if name in models:
            own = [k for k in (f"{role}_base_url", f"{role}_key_env") if getattr(preset, k)]
            if own:
                raise ConfigError(f"{at}: {role} = \"{name}\" is a [models.{name}] table: give its {own[0][len(role) + 1:]} "
                                  "there, not here")
            changes[role] = models[name].spec
            endpoints.append((role, models[name]))
        elif "/" not in name:
            raise ConfigError(f"{at}: {role} = \"{name}\" is neither a [models.NAME] table "
                              f"({', '.join(models) or 'none defined'}) nor a provider/model spec")
    for tier, name in preset.tiers:
        if name in models:
            endpoints.append((tier, models[name]))
        elif "/" in name:
            endpoints.append((tier, Endpoint(name)))
        else:
            raise ConfigError(f"{at}: tier {tier} = \"{name}\" is neither a [models.NAME] table "
                              f"({', '.join(models) or 'none defined'}) nor a provider/model spec")
    return replace(preset, endpoints=tuple(endpoints), **changes)


def builtin_presets(base: dict[str, Any] | None = None) -> dict[str, Preset]:
    """``cope`` plus ``cope-<task>`` for every task family the library has now."""
    from ..api import DEFAULT_LARGE, DEFAULT_SMALL
    from ..tasks import TASKS

    base = {"small": DEFAULT_SMALL, "large": DEFAULT_LARGE, **(base or {})}
    # chat by default: an app that knows nothing of cope gets open-ended answers, not \boxed{} math;
    # the task families stay one model name away (cope-math, cope-code, ...)
    presets = {"cope": Preset(name="cope", **{"task": CHAT_TASK, **base})}
    for task in TASKS:
        presets[f"cope-{task}"] = Preset(name=f"cope-{task}", **{**base, "task": task})
    return presets


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                preset_files: Sequence[str] = ()) -> ServerConfig:
    """The built-in presets, extended and overridden by a TOML file, plus keys from COPE_API_KEYS.

    Each of ``preset_files`` (``cope serve --preset FILE``) is served under
    the name it holds, on the ``cope`` preset's models and task.
    """
    env = os.environ if environ is None else environ
    if path is None:
        config = ServerConfig(presets=builtin_presets())
    else:
        config = _load_file(path)
    for file in preset_files:
        from ..methods import load_preset

        pf = load_preset(file)
        if pf.name in config.presets:
            raise ConfigError(f"{file}: a preset named '{pf.name}' is already served; give the file another name")
        config.presets[pf.name] = replace(config.presets["cope"], name=pf.name, preset_file=str(file))
    extra = env_keys(env.get(ENV_KEYS), config.keys)
    config.keys = [*config.keys, *extra]
    config.env_keys = len(extra)
    validate(config)
    return config


def env_keys(value: str | None, known: list[KeyConfig]) -> list[KeyConfig]:
    """The keys of COPE_API_KEYS that the config file does not already list.

    Unset or empty means none. Blank entries (a trailing comma) are skipped; a
    value with no key at all, or a key shorter than 8 characters, is an error
    that names the entry by position, never by its text.
    """
    if not value:
        return []
    entries = [e.strip() for e in value.split(",")]
    secrets = [e for e in entries if e]
    if not secrets:
        raise ConfigError(f"{ENV_KEYS} is set but holds no key; give comma-separated keys, or unset it")
    for i, secret in enumerate(secrets, 1):
        if len(secret) < 8 or any(ch.isspace() for ch in secret):
            raise ConfigError(f"{ENV_KEYS}: key {i} of {len(secrets)} must be at least 8 characters, without spaces")
    seen = {k.secret for k in known}
    keys = []
    for i, secret in enumerate(secrets, 1):
        if secret in seen:  # listed in the config file too (its name and budget win), or twice here
            continue
        seen.add(secret)
        digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
        keys.append(KeyConfig(name=f"{ENV_KEYS}[{i}]", secret=secret, account=f"{ENV_KEYS}:{digest}"))
    return keys


def _load_file(path: str | os.PathLike[str]) -> ServerConfig:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    where = f"config file {path}"
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown section or key '{unknown[0]}'; allowed: {', '.join(sorted(_TOP_KEYS))}")
    models = _models(where, data.get("models", {}))

    defaults = _table(f"{where}: [defaults]", data.get("defaults", {}), _PRESET_KEYS)
    presets = builtin_presets(defaults)
    base = presets["cope"]  # what a new preset starts from, before any override of "cope"
    named = data.get("presets", {})
    if not isinstance(named, dict):
        raise ConfigError(f"{where}: 'presets' must hold [presets.NAME] tables")
    for name, table in named.items():
        if not _NAME_RE.match(name):
            raise ConfigError(f"{where}: preset name '{name}' must be letters, digits and . _ : - (at most 64)")
        own = _table(f"{where}: [presets.{name}]", table, _PRESET_KEYS)
        for key in ("preset_file", "cascade_file"):
            if own.get(key) and not Path(own[key]).is_absolute():
                own[key] = str(file.parent / own[key])  # relative to the config file
        presets[name] = replace(presets.get(name, base), name=name, **own)
    presets = {name: _resolve_models(where, p, models) for name, p in presets.items()}

    limits = Limits(**_table(f"{where}: [limits]", data.get("limits", {}), _LIMIT_KEYS))
    ledger = LedgerConfig(**_table(f"{where}: [ledger]", data.get("ledger", {}), _LEDGER_KEYS))
    if ledger.path and not Path(ledger.path).expanduser().is_absolute():
        ledger = replace(ledger, path=str(file.parent / ledger.path))  # relative to the config file
    keys = _keys(where, data.get("keys", {}))

    prices = data.get("prices")
    if prices is not None:
        if not isinstance(prices, str) or not prices:
            raise ConfigError(f"{where}: 'prices' must be a path to a price file")
        prices = str((file.parent / prices) if not Path(prices).is_absolute() else Path(prices))
    return ServerConfig(presets=presets, keys=keys, limits=limits, ledger=ledger, prices=prices, source=str(path),
                        models=models)


_BUDGET_KEYS = ("budget_usd", "daily_usd", "monthly_usd")


def _keys(where: str, table: Any) -> list[KeyConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'keys' must hold [keys.NAME] tables")
    keys, seen = [], set()
    for name, row in table.items():
        at = f"{where}: [keys.{name}]"
        if not isinstance(row, dict):
            raise ConfigError(f"{at} must be a table")
        unknown = sorted(set(row) - {"key", "key_env", *_BUDGET_KEYS})
        if unknown:
            raise ConfigError(f"{at}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_BUDGET_KEYS))}, "
                              "key, key_env")
        if ("key" in row) == ("key_env" in row):
            raise ConfigError(f"{at}: give exactly one of 'key' (the secret) or 'key_env' (a variable holding it)")
        if "key" in row:
            secret = row["key"]
            if not isinstance(secret, str):
                raise ConfigError(f"{at}: 'key' must be a string")
        else:
            var = row["key_env"]
            if not isinstance(var, str) or not var:
                raise ConfigError(f"{at}: 'key_env' must name an environment variable")
            secret = os.environ.get(var, "")
            if not secret:
                raise ConfigError(f"{at}: environment variable {var} is not set")
        if len(secret) < 8 or secret != secret.strip():
            raise ConfigError(f"{at}: a key must be at least 8 characters, without surrounding spaces")
        if secret in seen:
            raise ConfigError(f"{at}: the same key is listed twice")
        seen.add(secret)
        budgets: dict[str, float] = {}
        for label in _BUDGET_KEYS:
            budget = row.get(label)
            if budget is not None:
                if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < math.inf:
                    raise ConfigError(f"{at}: '{label}' must be a number >= 0, got {budget!r}")
                budgets[label] = float(budget)
        keys.append(KeyConfig(name=name, secret=secret, **budgets))
    return keys


def validate(config: ServerConfig) -> None:
    """Check every preset without loading a model, so mistakes surface at startup."""
    from ..models.registry import parse_spec
    from ..pricing import PriceTable
    from ..tasks import TASKS

    lim = config.limits
    for key in ("max_concurrent", "max_input_chars", "max_messages", "max_body_bytes"):
        if getattr(lim, key) < 1:
            raise ConfigError(f"[limits] {key} must be >= 1, got {getattr(lim, key)}")
    if lim.max_waiting < 0:
        raise ConfigError(f"[limits] max_waiting must be >= 0, got {lim.max_waiting}")
    if lim.timeout_s <= 0:
        raise ConfigError(f"[limits] timeout_s must be > 0, got {lim.timeout_s}")
    led = config.ledger
    if led.backend not in LEDGER_BACKENDS:
        raise ConfigError(f"[ledger] backend must be one of {', '.join(LEDGER_BACKENDS)}, got '{led.backend}'")
    if led.path is not None and led.backend != "sqlite":
        raise ConfigError(f"[ledger] path is for the sqlite backend, not '{led.backend}'")
    if led.url is not None and led.backend != "redis":
        raise ConfigError(f"[ledger] url is for the redis backend, not '{led.backend}'")
    if led.backend == "redis":
        url = config.ledger_url()
        if not url:
            raise ConfigError(f"[ledger] the redis backend needs a url (or {LEDGER_URL_ENV})")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("[ledger] url must start with redis://, rediss:// or unix://")
    try:
        from .spend import zone

        zone(led.timezone)
    except (ValueError, KeyError, OSError):
        raise ConfigError(f"[ledger] timezone: unknown time zone '{led.timezone}' (e.g. UTC, Europe/Paris)") from None
    if led.stale_hold_s is not None and led.stale_hold_s <= 0:
        raise ConfigError(f"[ledger] stale_hold_s must be > 0, got {led.stale_hold_s}")

    table = PriceTable.load(config.prices)
    for p in config.presets.values():
        at = f"preset '{p.name}'"
        if p.task not in TASKS:
            raise ConfigError(f"{at}: unknown task '{p.task}'; available: {', '.join(TASKS)}")
        try:
            p.solver.validate()  # method, n, thresholds, max_tokens, preset file: checked as the library does
        except ConfigError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        if p.system not in SYSTEM_MODES:
            raise ConfigError(f"{at}: system must be one of {', '.join(SYSTEM_MODES)}, got '{p.system}'")
        if p.tools not in TOOL_POLICIES:
            raise ConfigError(f"{at}: tools must be one of {', '.join(TOOL_POLICIES)}, got '{p.tools}'")
        if p.timeout_s is not None and p.timeout_s <= 0:
            raise ConfigError(f"{at}: timeout_s must be > 0, got {p.timeout_s}")
        if p.request_timeout_s is not None and p.request_timeout_s <= 0:
            raise ConfigError(f"{at}: request_timeout_s must be > 0, got {p.request_timeout_s}")
        if p.n_threads is not None and p.n_threads < 1:
            raise ConfigError(f"{at}: n_threads must be >= 1, got {p.n_threads}")
        if p.api_key_env and not os.environ.get(p.api_key_env):
            raise ConfigError(f"{at}: environment variable {p.api_key_env} is not set")
        if p.tiers and not p.cascade_file:
            raise ConfigError(f"{at}: tiers are for a cascade file's stages; set cascade_file too")
        declared: dict[str, Any] = {}
        if p.cascade_file:
            from ..cascade_file import load as load_cascade

            declared = dict(load_cascade(p.cascade_file).tiers)
        endpoints = {role: p.endpoint(role) for role in p.roles()}
        for name, ep in declared.items():
            if name not in endpoints:
                if ep is None:
                    raise ConfigError(f"{at}: the cascade file's tier '{name}' has no model; give it in the "
                                      f"preset: tiers = {{ {name} = \"MODEL\" }}")
                endpoints[name] = ep
        for role, ep in endpoints.items():
            label = role if role in ("small", "large") else f"tier {role}"
            try:
                ep.validate(label).api_key(label)
            except ConfigError as exc:
                raise ConfigError(f"{at}: {exc}") from None
            price_as = {"small": p.small_price_as, "large": p.price_as}.get(role)
            try:
                parse_spec(ep.spec)
                _check_local(ep.spec)
                table.for_spec(ep.spec, _effective_price_as(role, ep.spec, price_as) or ep.price_as)
            except ConfigError:
                raise
            except Exception as exc:  # UnknownModelError, PriceError: name the preset
                raise type(exc)(f"{at}: {label} model: {exc}") from None
            if ep.spec.startswith("openai/") and not (ep.base_url or ep.key_env or p.base_url
                                                      or os.environ.get("OPENAI_BASE_URL")
                                                      or p.api_key_env or os.environ.get("OPENAI_API_KEY")):
                raise ConfigError(f"{at}: {ep.spec} needs OPENAI_API_KEY, api_key_env or a base_url")


def _effective_price_as(role: str, spec: str, price_as: str | None) -> str | None:
    """The row a model is charged at, following ``cope.Cope``'s default for the large model."""
    from ..api import default_large_price_as

    if price_as is None:
        return default_large_price_as(spec) if role == "large" else None
    return price_as or None


def _check_local(spec: str) -> None:
    """A local model must be a named one or an existing .gguf (loading waits for first use)."""
    from ..errors import UnknownModelError
    from ..models.local_files import NAMED_MODELS

    provider, _, name = spec.partition("/")
    if provider != "local" or name in NAMED_MODELS:
        return
    if not name.endswith(".gguf"):
        raise UnknownModelError(f"unknown local model '{name}'; named models: {', '.join(NAMED_MODELS)}, "
                                f"or a path to a .gguf file")
    if not Path(name).expanduser().is_file():
        raise UnknownModelError(f"local model file not found: {name}")
