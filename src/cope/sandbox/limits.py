"""What bounds one sandboxed run (Limits) and what it reports (RunResult)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Bounds on one run. All are enforced by the kernel except ``step_timeout_s``.

    ``processes`` counts processes and threads a program may add; with the
    address-space cap it bounds the worst case of a fork-and-allocate bomb to
    about ``processes x memory_mb``, so keep the product small on a shared
    machine. ``disk_mb`` caps the private tmpfs (bubblewrap; in the fallback
    where root may mount one).
    """

    timeout_s: float = 10.0  # wall clock for the whole run
    step_timeout_s: float = 5.0  # loading the program, and each test
    cpu_s: int = 10
    memory_mb: int = 512
    processes: int = 8
    file_size_mb: int = 16
    disk_mb: int = 64
    open_files: int = 64
    output_bytes: int = 64 * 1024  # stdout / stderr kept per run

    def __post_init__(self) -> None:
        for name in ("timeout_s", "step_timeout_s", "cpu_s", "memory_mb", "processes",
                     "file_size_mb", "disk_mb", "open_files", "output_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.memory_mb < 64:
            raise ConfigError(f"sandbox limit memory_mb must be >= 64 (Python needs it to start), got {self.memory_mb}")
        if self.open_files < 16:
            raise ConfigError(f"sandbox limit open_files must be >= 16, got {self.open_files}")


@dataclass
class RunResult:
    """What one run did: whether the program loaded, which tests passed, and how it ended.

    ``passed[i]`` / ``errors[i]`` belong to ``tests[i]`` of the call; a test
    that never got to run (the program failed to load, the run was killed)
    counts as failed with an explanatory error. ``info`` says whether the
    guard was on, whether root was dropped, and the run's ``marker`` (a
    string in the command line of each of its processes).
    """

    loaded: bool
    passed: list[bool]
    errors: list[str]
    load_error: str
    timed_out: bool
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    info: dict[str, object] = field(default_factory=dict)
    # one (True, value) or (False, error) per probe of the call
    values: list[tuple[bool, object]] = field(default_factory=list)

    @property
    def n_passed(self) -> int:
        return sum(self.passed)

    @property
    def all_passed(self) -> bool:
        """Loaded, and every test passed (vacuously true with no tests)."""
        return self.loaded and all(self.passed)
