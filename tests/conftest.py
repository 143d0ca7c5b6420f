"""Shared fixtures: real local models, loaded once per test run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tests run on 2 cores; keep llama.cpp from oversubscribing when pytest runs
# a server process beside it.
os.environ.setdefault("COPE_THREADS", "2")
# The server keeps spend in a SQLite ledger under its state directory: never the
# developer's own, and one fresh directory per test run (a server test that wants
# its own ledger sets the variable for its process).
import tempfile  # noqa: E402

os.environ["COPE_STATE_DIR"] = tempfile.mkdtemp(prefix="cope-test-state-")

SMOL = "local/smollm2-135m"


@pytest.fixture(scope="session")
def smol_path():
    from cope.models.local_files import model_path

    return model_path("smollm2-135m")


@pytest.fixture(scope="session")
def smol():
    from cope.models.llamacpp import LlamaCppModel

    return LlamaCppModel("smollm2-135m")
