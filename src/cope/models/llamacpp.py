"""``local/<name>``: embedded llama.cpp models, decoded in a worker process per model.

The batched decoding itself is in :mod:`cope.models.llamacpp_engine`; it runs
in a child process (:mod:`cope.models.worker`) so that a native fault ends
with one clear error instead of taking the caller down.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Sequence

from ..errors import UnknownModelError
from .base import Completion, Generation, GenParams, Message, on_text
from .local_files import NAMED_MODELS, model_path
from .worker import EngineClient


def resolve_local_path(name: str) -> Path:
    """A named local model or a path to a .gguf file."""
    if name in NAMED_MODELS:
        return model_path(name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UnknownModelError(f"local model file not found: {name}")
        return path
    known = ", ".join(NAMED_MODELS)
    raise UnknownModelError(f"unknown local model '{name}'; named models: {known}, or give a path to a .gguf file")


_ENGINES: dict[tuple[str, int, int, int], EngineClient] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(path: Path, n_ctx: int, n_threads: int, max_seqs: int, spec: str) -> EngineClient:
    """One worker per model file and settings per process: weights load once.

    A worker that died is replaced on the next call, so a model killed for
    memory can be tried again; the call that saw the death still fails.
    """
    key = (str(path.resolve()), n_ctx, n_threads, max_seqs)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None or not eng.alive:
            eng = _ENGINES[key] = EngineClient(path, n_ctx, n_threads, max_seqs, spec)
        return eng


class LlamaCppModel:
    """``local/<name>`` or ``local/<path>.gguf`` through embedded llama.cpp.

    Loading is lazy (first call), so building a ``Cope`` or listing models is
    instant and a model that is never used is never read from disk.
    """

    def __init__(
        self, name: str, *, n_ctx: int = 8192, n_threads: int | None = None, max_seqs: int = 16
    ) -> None:
        self.name = name
        self.spec = f"local/{name}"
        self.path = resolve_local_path(name)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("COPE_THREADS", 0)) or (os.cpu_count() or 1)
        self.max_seqs = max_seqs

    @property
    def engine(self) -> EngineClient:
        return _engine(self.path, self.n_ctx, self.n_threads, self.max_seqs, self.spec)

    def _run(
        self, prompts: Sequence[Sequence[Message]], params: GenParams, n_each: list[int], cancel: threading.Event
    ) -> list[Generation]:
        eng = self.engine
        with eng.lock:
            t0 = time.perf_counter()
            before = eng.tokens_evaluated
            toks = [eng.chat_tokens(m) for m in prompts]
            # a listener for this call's text (a final answer being streamed): pieces as decoded
            stream = on_text.get() is not None and sum(n_each) == 1
            seqs = eng.run(toks, n_each, params, cancel, stream)
            dt = time.perf_counter() - t0
            evaluated = eng.tokens_evaluated - before
        gens = []
        for tk, samples in zip(toks, seqs):
            comps = [
                Completion(
                    text=s.text,
                    completion_tokens=s.n_tokens,
                    finish_reason=s.finish,
                    logprobs=list(s.logprobs) if params.logprobs else None,
                    tokens=list(s.token_texts) if params.logprobs else None,
                )
                for s in samples
            ]
            gens.append(
                Generation(
                    completions=comps,
                    prompt_tokens=len(tk),
                    completion_tokens=sum(c.completion_tokens for c in comps),
                    latency_s=dt / len(prompts),  # a batch's wall time, split evenly
                    model=self.spec,
                    extra={"batch_prompts": len(prompts), "prompt_tokens_evaluated": evaluated},
                )
            )
        return gens

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        return (await self._in_thread([messages], params, [params.n]))[0]

    async def generate_many(
        self, prompts: Sequence[Sequence[Message]], params: GenParams
    ) -> list[Generation]:
        """All prompts decoded as one batch (``params.n`` samples each)."""
        if not prompts:
            return []
        return await self._in_thread(list(prompts), params, [params.n] * len(prompts))

    async def _in_thread(self, prompts, params: GenParams, n_each: list[int]) -> list[Generation]:
        """Wait for the worker in a thread; a cancelled caller stops it at the next step.

        Without the flag, Ctrl-C (or a client hanging up on the server) would
        leave the worker decoding for a minute, holding the model's lock.
        """
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._run, prompts, params, n_each, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
