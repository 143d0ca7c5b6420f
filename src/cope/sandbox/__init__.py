"""Run untrusted, model-written Python in a separate, limited process (see :mod:`cope.sandbox.core`).

The package, by concern:

- ``limits``: what bounds one run and what it reports (``Limits``, ``RunResult``);
- ``core``: the ``Sandbox`` (isolation levels, the bubblewrap layer, the fallback's
  layers) and the shared default one;
- ``host``: where the interpreter lives and who may read it, the scrubbed environment;
- ``process``: reaping what a run left, quota mounts, cleanup;
- ``view``: a read-only view of an interpreter under a private home, so root's programs
  still run as ``nobody`` in the fallback;
- ``probes``: reading probe values back from a run's records;
- ``child``: what runs inside: the harness (the judge's process), the program's
  process, the plain-data codec between them, the in-process guard, Landlock and
  seccomp, as real Python files whose text the host sends.
"""

from __future__ import annotations

from .core import ISOLATIONS, Sandbox, default_sandbox, isolation_status, landlock_abi
from .limits import Limits, RunResult
from .process import disk_quota_available

__all__ = ["ISOLATIONS", "Limits", "RunResult", "Sandbox", "default_sandbox", "disk_quota_available",
           "isolation_status", "landlock_abi"]
