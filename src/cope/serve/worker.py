"""The app factory each ``cope serve --workers K`` process runs.

The supervisor validated the config before spawning; each worker loads the
same files again (named in ``COPE_SERVE_WORKER``), scrubs secrets from its own
logs, and builds its app. Spend is shared through the SQLite ledger, so a key's
budget holds across the workers.
"""

from __future__ import annotations

import json
import os
from typing import Any

ARGS_ENV = "COPE_SERVE_WORKER"


def build() -> Any:
    from . import create_app, load_config
    from .logs import Scrubber, configure

    spec = json.loads(os.environ[ARGS_ENV])
    config = load_config(spec["config"], preset_files=spec["preset"])
    Scrubber(config.secrets()).install()
    configure(spec["log_level"], spec.get("log_format", "text"))
    return create_app(config)
