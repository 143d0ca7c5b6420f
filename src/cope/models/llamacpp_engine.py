"""Embedded llama.cpp decoding with batched sampling: the code that runs in a model's worker process.

Why not ``Llama.create_chat_completion`` in a loop: COPE draws n samples per
stage, and on a CPU each decode step is bound by reading the weights from
memory. Decoding the n sequences as one batch reads the weights once per step
for all of them, and the prompt is evaluated once and shared through the KV
cache (llama.cpp sequence copy). The same engine batches *different* prompts
(stage 1 executes one prompt per goal) and keeps the longest common prefix in
the cache between calls, so repeated system prompts cost nothing.

Sampling is done here in numpy (top-k 40, top-p 0.95, min-p 0.05, then
temperature, llama.cpp's defaults) with one seeded generator per sample, so a
seed reproduces the same texts.

Only :mod:`cope.models.worker` imports this module, inside the child process:
native code that faults (an instruction the CPU does not run, memory) then
takes down the worker, not the caller.
"""

from __future__ import annotations

import codecs
import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import BackendError, ConfigError
from .base import Cancelled, GenParams, Message, report_samples, report_tokens

TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05


class Flag(Protocol):
    """A cancel flag the decode loop polls once per step (``threading.Event`` fits)."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Sample:
    """One finished sample, as it crosses the process boundary."""

    text: str
    n_tokens: int
    finish: str
    logprobs: list[float]
    token_texts: list[str]


@dataclass
class _Seq:
    """One sample being decoded."""

    seq_id: int
    rng: np.random.Generator
    pos: int
    tokens: list[int] = field(default_factory=list)
    pieces: bytearray = field(default_factory=bytearray)
    logprobs: list[float] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    finish: str | None = None
    text: str = ""


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    k = min(TOP_K, logits.shape[0])
    idx = np.argpartition(logits, -k)[-k:]
    vals = logits[idx].astype(np.float64)
    order = np.argsort(-vals)
    idx, vals = idx[order], vals[order]
    p = np.exp(vals - vals[0])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), TOP_P)) + 1  # smallest set with mass >= top_p
    keep = min(keep, int(np.count_nonzero(p >= MIN_P * p[0])) or 1)
    scaled = np.exp((vals[:keep] - vals[0]) / temperature)
    scaled /= scaled.sum()
    return int(idx[int(np.searchsorted(np.cumsum(scaled), rng.random() * (1 - 1e-12)))])


def _logprob(logits: np.ndarray, token: int) -> float:
    m = float(logits.max())
    return float(logits[token] - m - np.log(np.exp(logits - m, dtype=np.float64).sum()))


class _Engine:
    """One loaded model with its context; not thread-safe (one worker process, one caller)."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int, max_seqs: int) -> None:
        import logging

        import llama_cpp
        import llama_cpp._logger

        # llama.cpp logs every tensor it loads to stderr; load failures surface as our own errors.
        if not os.environ.get("COPE_VERBOSE"):
            llama_cpp._logger.logger.setLevel(logging.CRITICAL)

        self.lib = llama_cpp
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise BackendError(f"llama.cpp could not load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.max_seqs = max_seqs
        self.n_batch = 512
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = max_seqs + 1  # seq 0 holds the cached prefix
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # copies of the shared prompt are tags, not data
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise BackendError(f"llama.cpp could not create a context for {path}")
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(max(self.n_batch, max_seqs + 1), 0, 1)
        self.cached: list[int] = []  # tokens held by seq 0
        self.meta = self._metadata()
        self._formatter = self._make_formatter()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.tokens_evaluated = 0  # prompt tokens actually run through the model
        self.tokens_generated = 0

    # --- text <-> tokens -------------------------------------------------
    def _metadata(self) -> dict[str, str]:
        lib, out = self.lib, {}
        buf = ctypes.create_string_buffer(1 << 16)
        for key in ("tokenizer.chat_template", "general.name"):
            n = lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
            if n >= len(buf):
                buf = ctypes.create_string_buffer(n + 1)
                n = lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
            if n >= 0:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _make_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.meta.get("tokenizer.chat_template")
        if not template:
            raise BackendError("this GGUF has no chat template; cope needs an instruct model")
        piece = lambda t: self.piece(t, special=True).decode("utf-8", errors="ignore")  # noqa: E731
        eos = piece(self.lib.llama_vocab_eos(self.vocab))
        bos = piece(self.lib.llama_vocab_bos(self.vocab))
        return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[: max(n, 0)]

    def tokenize(self, text: str) -> list[int]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("the prompt contains characters that are not valid Unicode (a lone surrogate)") from None
        cap = len(data) + 16
        arr = (self.lib.llama_token * cap)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), arr, cap, False, True)
        if n < 0:
            raise BackendError("tokenization failed")
        toks = list(arr[:n])
        if self.add_bos and (not toks or toks[0] != self.bos):
            toks.insert(0, self.bos)
        return toks

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        prompt = self._formatter(messages=[dict(m) for m in messages]).prompt
        return self.tokenize(prompt)

    # --- decoding --------------------------------------------------------
    def _decode(self, items: list[tuple[int, int, int, bool]], chunk: int | None = None) -> None:
        """Decode (token, pos, seq, want_logits) items, in chunks of ``chunk`` (default n_batch)."""
        b = self.batch
        size = min(chunk or self.n_batch, self.n_batch)
        for start in range(0, len(items), size):
            part = items[start : start + size]
            for i, (tok, pos, seq, want) in enumerate(part):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = want
            b.n_tokens = len(part)
            rc = self.lib.llama_decode(self.ctx, b)
            if rc != 0:
                raise BackendError(f"llama.cpp decode failed (code {rc}); context too small?")

    def _logits(self, i: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def run(
        self, prompts: list[list[int]], n_each: list[int], params: GenParams,
        cancel: Flag | None = None, on_text: Callable[[str], None] | None = None,
    ) -> list[list[Sample]]:
        """Decode ``n_each[i]`` samples of every prompt; groups fit the context.

        ``on_text`` hears a lone sample's text as it is decoded (whole characters, in order;
        the pieces join to its text). It is ignored for several samples or with stop strings,
        whose text is only known once they end."""
        stream = on_text if sum(n_each) == 1 and not params.stop else None
        jobs = [(i, j) for i, n in enumerate(n_each) for j in range(n)]
        out: list[list[Sample]] = [[None] * n for n in n_each]  # type: ignore[list-item]
        group: list[tuple[int, int]] = []
        for job in jobs:
            if group and not self._fits(prompts, group + [job], params.max_tokens):
                self._run_group(prompts, group, params, out, cancel, stream)
                group = []
            if not self._fits(prompts, [job], params.max_tokens):
                raise ConfigError(
                    f"prompt of {len(prompts[job[0]])} tokens + max_tokens {params.max_tokens} "
                    f"exceeds the context of {self.n_ctx} tokens"
                )
            group.append(job)
        if group:
            self._run_group(prompts, group, params, out, cancel, stream)
        return out

    def _fits(self, prompts: list[list[int]], group: list[tuple[int, int]], max_tokens: int) -> bool:
        if len(group) > self.max_seqs:
            return False
        used = {i for i, _ in group}
        # the cached prefix is cut to the group's own before it decodes, so what was cached before
        # does not count (a group's make-up, and so its samples, never depends on earlier calls)
        cells = sum(len(prompts[i]) for i in used) + len(group) * max_tokens
        return cells <= self.n_ctx

    def _run_group(self, prompts, group, params: GenParams, out, cancel=None, stream=None) -> None:
        lib, mem = self.lib, self.mem
        decoder = codecs.getincrementaldecoder("utf-8")("replace") if stream is not None else None

        def accept(sq: _Seq, logits: np.ndarray) -> int:
            """Sample one token of ``sq``; 1 when it added a token (0: it ended on end-of-generation)."""
            before = len(sq.tokens)
            piece = self._accept(sq, logits, params)
            if decoder is not None:
                text = decoder.decode(piece, final=sq.finish is not None)
                if text:
                    stream(text)
            return len(sq.tokens) - before
        used = sorted({i for i, _ in group})
        # 1. Shared prefix on seq 0, reusing what the cache already holds: whole blocks only. The
        # prefix is always decoded in blocks at fixed positions, so a reused block holds exactly
        # what decoding it afresh would (a batch's numbers depend on what else is in it): a call's
        # samples never depend on the calls before it.
        prefix = _common_prefix([prompts[i] for i in used])
        prefix = prefix[: min(len(prompts[i]) for i in used) - 1]
        keep = len(_common_prefix([self.cached, prefix])) // PREFIX_BLOCK * PREFIX_BLOCK
        lib.llama_memory_seq_rm(mem, 0, keep, -1)
        self.cached = self.cached[:keep]
        self._decode([(t, keep + k, 0, False) for k, t in enumerate(prefix[keep:])], chunk=PREFIX_BLOCK)
        self.tokens_evaluated += len(prefix) - keep
        self.cached = list(prefix)
        # 2. Each prompt's own suffix on the seq of its first sample.
        seqs: dict[tuple[int, int], _Seq] = {}
        first_seq: dict[int, int] = {}
        for slot, (i, j) in enumerate(group, start=1):
            seed = params.seed
            rng = np.random.default_rng(None if seed is None else [seed, i, j])
            seqs[(i, j)] = _Seq(seq_id=slot, rng=rng, pos=len(prompts[i]))
            first_seq.setdefault(i, slot)
        items, last_index = [], {}
        for i in used:
            s = first_seq[i]
            lib.llama_memory_seq_rm(mem, s, -1, -1)
            lib.llama_memory_seq_cp(mem, 0, s, -1, -1)
            suffix = prompts[i][len(prefix):]
            for k, t in enumerate(suffix):
                want = k == len(suffix) - 1
                if want:
                    last_index[i] = len(items)
                items.append((t, len(prefix) + k, s, want))
        self.tokens_evaluated += len(items)
        prompt_logits: dict[int, np.ndarray] = {}
        for start in range(0, len(items), self.n_batch):
            self._decode(items[start : start + self.n_batch])
            for i, idx in last_index.items():
                if start <= idx < start + self.n_batch:
                    prompt_logits[i] = self._logits(idx - start).copy()
        for (i, j), sq in seqs.items():
            if sq.seq_id != first_seq[i]:
                lib.llama_memory_seq_rm(mem, sq.seq_id, -1, -1)
                lib.llama_memory_seq_cp(mem, first_seq[i], sq.seq_id, -1, -1)
        # 3. Decode all samples together, one token each per step.
        active = list(seqs.values())
        report_tokens(sum(accept(sq, prompt_logits[i]) for (i, _), sq in seqs.items()))
        active = [s for s in active if s.finish is None]
        if len(active) < len(seqs):
            report_samples(len(seqs) - len(active))
        while active:
            if cancel is not None and cancel.is_set():
                for sq in seqs.values():
                    lib.llama_memory_seq_rm(mem, sq.seq_id, -1, -1)
                raise Cancelled()
            self._decode([(s.tokens[-1], s.pos - 1, s.seq_id, True) for s in active])
            # the tokens this step added, as the samples' completion_tokens count them
            report_tokens(sum(accept(sq, self._logits(b)) for b, sq in enumerate(active)))
            still = [s for s in active if s.finish is None]
            if len(still) < len(active):
                report_samples(len(active) - len(still))
            active = still
        for sq in seqs.values():
            lib.llama_memory_seq_rm(mem, sq.seq_id, -1, -1)
        for (i, j), sq in seqs.items():
            out[i][j] = Sample(sq.text, len(sq.tokens), sq.finish or "length", sq.logprobs, sq.token_texts)

    def _accept(self, sq: _Seq, logits: np.ndarray, params: GenParams) -> bytes:
        """Sample the next token of ``sq``, decide whether it is finished; the bytes it added."""
        tok = _sample(logits, params.temperature, sq.rng)
        if self.lib.llama_vocab_is_eog(self.vocab, tok):
            sq.finish = "stop"
            sq.text = sq.pieces.decode("utf-8", errors="replace")
            return b""
        if params.logprobs:
            sq.logprobs.append(_logprob(logits, tok))
        piece = self.piece(tok)
        sq.tokens.append(tok)
        self.tokens_generated += 1
        sq.token_texts.append(piece.decode("utf-8", errors="replace"))
        sq.pieces += piece
        sq.pos += 1
        text = sq.pieces.decode("utf-8", errors="replace")
        for stop in params.stop:
            cut = text.find(stop, max(0, len(text) - len(piece) - len(stop) - 4))
            if cut >= 0:
                sq.finish, sq.text = "stop", text[:cut]
                return piece
        if len(sq.tokens) >= params.max_tokens:
            sq.finish, sq.text = "length", text
        return piece


# tokens of a prompt prefix decoded together; cached prefixes are reused a whole block at a time
# (700-token prefills of the 0.5B measured 1.01x slower in blocks of 128 than of 512, 1.06x in 64)
PREFIX_BLOCK = 128


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    if not seqs:
        return []
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        t = first[k]
        if any(s[k] != t for s in seqs[1:]):
            return first[:k]
    return first[:n]
