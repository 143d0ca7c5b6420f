"""OpenAIModel against real peers on 127.0.0.1.

Two peers, no mocks: llama-cpp-python's own OpenAI-compatible server running
the small SmolLM2 GGUF (protocol, n top-up, logprobs, seeds, stop strings),
and a scripted standard-library server for the faults a real provider shows
(429 with Retry-After, 5xx, 401, no listener, slow answers).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from cope.errors import BackendError, ConfigError
from cope.models.base import GenParams, Generation, Model
from cope.models.local_files import model_path
from cope.models.openai_compat import PLACEHOLDER_API_KEY, OpenAIModel
from fault_server import FaultServer, Reply, error_body

pytestmark = pytest.mark.timeout(60)

CHAT = [{"role": "user", "content": "Say hello."}]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(m: OpenAIModel, chat: list[dict[str, str]], params: GenParams) -> Generation:
    """One call in a fresh event loop, closing the model's connections after."""

    async def go() -> Generation:
        try:
            return await m.generate(chat, params)
        finally:
            await m.aclose()

    return asyncio.run(go())


def generate_many(m: OpenAIModel, prompts: list[list[dict[str, str]]], params: GenParams) -> list[Generation]:
    async def go() -> list[Generation]:
        try:
            return await m.generate_many(prompts, params)
        finally:
            await m.aclose()

    return asyncio.run(go())


def fast(base_url: str, **kw) -> OpenAIModel:
    """A model with millisecond backoff so retry tests stay quick."""
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 10.0)
    return OpenAIModel("fault-model", base_url=base_url, **kw)


# ---------------------------------------------------------------------------
# construction


def test_missing_key_and_base_url_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        OpenAIModel("gpt-4o-mini")
    msg = str(info.value)
    assert "set OPENAI_API_KEY or pass a base URL" in msg
    assert "\n" not in msg


def test_spec_protocol_and_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FaultServer([Reply()]) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        m = OpenAIModel("fault-model", max_retries=0)
        assert m.spec == "openai/fault-model"
        assert isinstance(m, Model)
        gen = generate(m, CHAT, GenParams(max_tokens=8))
        assert gen.texts == ["pong"]
        # No key anywhere: the placeholder is sent, since local servers need none.
        assert srv.seen[0].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_explicit_key_is_sent_and_request_shape() -> None:
    with FaultServer([Reply()]) as srv:
        m = fast(srv.base_url, api_key="sk-test-123")
        gen = generate(m, CHAT, GenParams(max_tokens=9, temperature=0.5))
        body = srv.seen[0].body
        assert srv.seen[0].headers["authorization"] == "Bearer sk-test-123"
        assert body["model"] == "fault-model"
        assert body["messages"] == CHAT
        assert body["max_tokens"] == 9 and body["temperature"] == 0.5
        # Empty stop list, n == 1, no seed and no logprobs are left out.
        for key in ("stop", "n", "seed", "logprobs"):
            assert key not in body, key
        assert gen.prompt_tokens == 7 and gen.completion_tokens == 2
        assert gen.completions[0].completion_tokens == 2
        assert gen.extra["requests"] == 1 and gen.extra["attempts"] == 1
        assert "usage_missing" not in gen.extra
        assert gen.model == "openai/fault-model"
        assert gen.latency_s > 0


def test_user_client_is_used_with_sdk_retries_off() -> None:
    import openai

    async def go(base_url: str) -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=7)
        try:
            m = OpenAIModel("fault-model", client=client, max_retries=0)
            with pytest.raises(BackendError):
                await m.generate(CHAT, GenParams())
            await m.aclose()
            assert not client.is_closed()  # the caller's client stays the caller's
        finally:
            await client.close()

    with FaultServer([Reply(500, body=error_body("boom")), Reply()]) as srv:
        asyncio.run(go(srv.base_url))
        # The SDK would have retried 7 times; ours allows none.
        assert srv.count == 1


def test_one_model_across_event_loops(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio.run() twice with one model: each loop gets its own connections."""
    with FaultServer([Reply()]) as srv:
        m = fast(srv.base_url)
        for _ in range(3):
            assert asyncio.run(m.generate(CHAT, GenParams())).texts == ["pong"]
        asyncio.run(m.aclose())
        gc.collect()
        assert srv.count == 3
    assert "Event loop is closed" not in caplog.text


# ---------------------------------------------------------------------------
# retries and failures


def test_429_with_retry_after_is_waited_then_succeeds() -> None:
    script = [Reply(429, {"Retry-After": "1"}, error_body("slow down", "rate_limit")), Reply()]
    with FaultServer(script) as srv:
        gen = generate(fast(srv.base_url), CHAT, GenParams())
        assert gen.texts == ["pong"]
        assert srv.count == 2
        gap = srv.seen[1].at - srv.seen[0].at
        assert gap >= 0.95, f"Retry-After: 1 not honoured, retried after {gap:.3f} s"
        assert gen.extra["attempts"] == 2 and gen.extra["requests"] == 1


def test_retry_after_is_capped() -> None:
    script = [Reply(429, {"Retry-After": "3600"}, error_body("come back in an hour")), Reply()]
    with FaultServer(script) as srv:
        t0 = time.monotonic()
        gen = generate(fast(srv.base_url, retry_after_cap=0.2), CHAT, GenParams())
        assert time.monotonic() - t0 < 5
        assert gen.texts == ["pong"] and srv.count == 2


def test_500_then_200_succeeds() -> None:
    with FaultServer([Reply(500, body=error_body("transient")), Reply()]) as srv:
        gen = generate(fast(srv.base_url), CHAT, GenParams())
        assert gen.texts == ["pong"]
        assert srv.count == 2
        assert gen.extra["attempts"] == 2


def test_always_500_gives_backend_error_after_all_attempts() -> None:
    with FaultServer([Reply(503, body=error_body("overloaded"))]) as srv:
        with pytest.raises(BackendError) as info:
            generate(fast(srv.base_url, max_retries=3), CHAT, GenParams())
        assert srv.count == 4  # max_retries + 1
        msg = str(info.value)
        assert "\n" not in msg
        assert "openai/fault-model" in msg and "503" in msg and "overloaded" in msg
        assert "after 4 attempts" in msg
        assert info.value.spent == []


def test_401_fails_at_once_with_server_message() -> None:
    with FaultServer([Reply(401, body=error_body("Incorrect API key provided", "invalid_request_error"))]) as srv:
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            # A long backoff would show up in the elapsed time if we retried.
            generate(fast(srv.base_url, backoff_base=5.0), CHAT, GenParams())
        assert time.monotonic() - t0 < 3
        assert srv.count == 1
        msg = str(info.value)
        assert "401" in msg and "Incorrect API key provided" in msg and "Error code" not in msg


@pytest.mark.parametrize("status", [400, 404])
def test_other_4xx_fail_at_once(status: int) -> None:
    with FaultServer([Reply(status, body=error_body(f"nope {status}"))]) as srv:
        with pytest.raises(BackendError) as info:
            generate(fast(srv.base_url), CHAT, GenParams())
        assert srv.count == 1
        assert str(status) in str(info.value) and f"nope {status}" in str(info.value)


def test_unreachable_server_gives_one_clear_line() -> None:
    port = free_port()  # bound then released: nothing listens there
    base = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendError) as info:
        generate(fast(base, max_retries=2), CHAT, GenParams())
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"openai/fault-model: cannot reach {base} (")
    assert "refused" in msg.lower()
    assert msg.endswith("after 3 attempts")


def test_timeout_is_retried_then_reported() -> None:
    with FaultServer([Reply(delay_s=1.5)]) as srv:
        with pytest.raises(BackendError) as info:
            generate(fast(srv.base_url, timeout=0.3, max_retries=1), CHAT, GenParams())
        assert srv.count == 2
        assert str(info.value).endswith("(timed out after 0.3 s) after 2 attempts")


def test_missing_usage_is_estimated_high_and_flagged() -> None:
    with FaultServer([Reply(usage=False)]) as srv:
        gen = generate(fast(srv.base_url), CHAT, GenParams())
        # "Say hello." is 10 characters: 4 estimated tokens + 4 template; "pong": 2 (never $0)
        assert gen.prompt_tokens == 8 and gen.completion_tokens == 2
        assert gen.extra["usage_missing"] is True and gen.extra["usage_estimated"] is True


# ---------------------------------------------------------------------------
# n, seeds, concurrency


def test_n_served_in_one_request_when_the_server_can() -> None:
    with FaultServer([Reply()]) as srv:
        gen = generate(fast(srv.base_url), CHAT, GenParams(n=4, seed=11))
        assert len(gen.completions) == 4
        assert srv.count == 1 and srv.seen[0].body["n"] == 4
        assert gen.prompt_tokens == 7  # billed once
        assert gen.completion_tokens == 8
        assert sum(c.completion_tokens for c in gen.completions) == 8


def test_n_topped_up_when_the_server_caps_choices() -> None:
    with FaultServer([Reply()], max_choices=2) as srv:
        gen = generate(fast(srv.base_url), CHAT, GenParams(n=5, seed=100))
        assert len(gen.completions) == 5
        # 2 from the first request, then chunks of 2 and 1 concurrently.
        assert srv.count == 3 and gen.extra["requests"] == 3
        assert sorted(s.body.get("n", 1) for s in srv.seen) == [1, 2, 5]
        assert sorted(s.body["seed"] for s in srv.seen) == [100, 101, 102]
        assert gen.prompt_tokens == 3 * 7  # each request bills the prompt
        assert gen.extra["server_choices_first_request"] == 2


def test_partial_top_up_failure_keeps_what_was_spent() -> None:
    script = [Reply(), Reply(401, body=error_body("key revoked"))]
    with FaultServer(script, max_choices=1) as srv:
        with pytest.raises(BackendError) as info:
            generate(fast(srv.base_url), CHAT, GenParams(n=2))
        assert "key revoked" in str(info.value)
        assert srv.count == 2
        spent = info.value.spent
        assert len(spent) == 1 and isinstance(spent[0], Generation)
        assert spent[0].prompt_tokens == 7 and len(spent[0].completions) == 1


def test_generate_many_respects_concurrency_limit_and_seeds() -> None:
    with FaultServer([Reply(delay_s=0.2)]) as srv:
        m = fast(srv.base_url, max_concurrency=2)
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
        gens = generate_many(m, prompts, GenParams(seed=50))
        assert len(gens) == 6 and all(g.texts == ["pong"] for g in gens)
        assert srv.max_in_flight == 2
        by_prompt = {s.body["messages"][0]["content"]: s.body["seed"] for s in srv.seen}
        assert by_prompt == {f"q{i}": 50 + i for i in range(6)}


# ---------------------------------------------------------------------------
# a real OpenAI-compatible server: llama-cpp-python's, on the small test model


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path("smollm2-135m")),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--n_ctx", "2048",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not answering after 60 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def local(base_url: str) -> OpenAIModel:
    return OpenAIModel("smollm2-135m", base_url=base_url, timeout=45.0, max_retries=1, backoff_base=0.1)


def test_llama_plain_generation(llama_server: str) -> None:
    gen = generate(local(llama_server), CHAT, GenParams(max_tokens=16))
    assert len(gen.completions) == 1
    c = gen.completions[0]
    assert c.text.strip()
    assert gen.prompt_tokens > 0
    assert 0 < gen.completion_tokens <= 16
    assert c.completion_tokens == gen.completion_tokens
    assert c.finish_reason in ("stop", "length")
    assert gen.extra["requests"] == 1
    assert "usage_missing" not in gen.extra


def test_llama_n3_is_topped_up(llama_server: str) -> None:
    gen = generate(local(llama_server), CHAT, GenParams(n=3, temperature=0.9, seed=7, max_tokens=12))
    assert len(gen.completions) == 3
    assert all(c.text.strip() for c in gen.completions)
    assert len(set(gen.texts)) > 1  # seeds 7, 8, 9: three different samples
    # llama.cpp's server answers one choice per request whatever n is.
    assert gen.extra["server_choices_first_request"] == 1
    assert gen.extra["requests"] == 3
    assert gen.prompt_tokens > 0 and gen.prompt_tokens % 3 == 0  # same prompt billed 3 times
    assert gen.completion_tokens == sum(c.completion_tokens for c in gen.completions)


def test_llama_logprobs(llama_server: str) -> None:
    gen = generate(local(llama_server), CHAT, GenParams(max_tokens=12, logprobs=True))
    c = gen.completions[0]
    assert c.logprobs is not None and c.tokens is not None
    assert len(c.logprobs) == len(c.tokens) > 0
    assert all(isinstance(x, float) and x <= 0.0 for x in c.logprobs)
    assert all(isinstance(t, str) for t in c.tokens)
    assert abs(len(c.logprobs) - c.completion_tokens) <= 1
    assert "".join(c.tokens).strip() == c.text.strip()


def test_llama_seed_reproducible(llama_server: str) -> None:
    m = local(llama_server)
    params = GenParams(temperature=0.8, seed=1234, max_tokens=20)
    a = generate(m, CHAT, params)
    b = generate(m, CHAT, params)
    assert a.texts == b.texts
    # Different seeds give different samples, so the equality above is not vacuous.
    others = {generate(m, CHAT, GenParams(temperature=0.8, seed=s, max_tokens=20)).texts[0] for s in (1, 2, 3)}
    assert len(others | {a.texts[0]}) > 1


def test_llama_stop_string(llama_server: str) -> None:
    chat = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    m = local(llama_server)
    free = generate(m, chat, GenParams(max_tokens=40))
    assert "," in free.texts[0], free.texts[0]  # the stop string would occur
    cut = generate(m, chat, GenParams(max_tokens=40, stop=(",",)))
    assert "," not in cut.texts[0]
    assert free.texts[0].startswith(cut.texts[0])
    assert cut.completions[0].finish_reason == "stop"
