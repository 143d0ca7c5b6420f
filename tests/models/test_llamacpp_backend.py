"""The embedded llama.cpp backend, on the real SmolLM2 file."""

from __future__ import annotations

import asyncio

import pytest

from cope.errors import ConfigError, UnknownModelError
from cope.models.base import GenParams
from cope.models.llamacpp import LlamaCppModel

MSGS = [{"role": "user", "content": "Count from one to ten in words."}]


def gen(model, messages=MSGS, **kw):
    return asyncio.run(model.generate(messages, GenParams(**kw)))


@pytest.fixture(scope="module")
def reference(smol_path):
    """llama-cpp-python's own high-level API on the same file: the oracle."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(smol_path), n_ctx=1024, n_threads=2, verbose=False, logits_all=True)


def test_greedy_matches_llama_cpp_high_level_api(smol, reference):
    ours = gen(smol, temperature=0.0, max_tokens=24)
    theirs = reference.create_chat_completion(MSGS, temperature=0.0, max_tokens=24)
    assert ours.prompt_tokens == theirs["usage"]["prompt_tokens"]
    assert ours.completions[0].text == theirs["choices"][0]["message"]["content"]
    assert ours.completion_tokens == theirs["usage"]["completion_tokens"]


def test_n_samples_usage_and_lengths(smol):
    g = gen(smol, n=3, temperature=0.9, max_tokens=20, seed=7)
    assert len(g.completions) == 3
    assert g.completion_tokens == sum(c.completion_tokens for c in g.completions)
    for c in g.completions:
        assert 0 < c.completion_tokens <= 20
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert c.completion_tokens == 20
    assert len(set(g.texts)) > 1, "three samples at T=0.9 should not all be identical"


def test_seed_reproducible_and_seed_matters(smol):
    a = gen(smol, n=3, temperature=0.8, max_tokens=24, seed=11)
    b = gen(smol, n=3, temperature=0.8, max_tokens=24, seed=11)
    c = gen(smol, n=3, temperature=0.8, max_tokens=24, seed=12)
    assert a.texts == b.texts
    assert a.texts != c.texts


def test_greedy_batch_samples_identical(smol):
    g = gen(smol, n=4, temperature=0.0, max_tokens=16)
    assert len(set(g.texts)) == 1


LONG = [{"role": "system", "content": "You are a careful assistant. " * 40},
        {"role": "user", "content": "Describe a cat in one sentence, please, with some detail."}]


def test_prompt_evaluated_once_for_n_samples_and_cached_after(smol):
    from cope.models.llamacpp_engine import PREFIX_BLOCK

    g1 = gen(smol, LONG, n=4, temperature=0.8, max_tokens=8, seed=1)
    # the prompt is evaluated once for 4 samples, not 4 times
    assert g1.extra["prompt_tokens_evaluated"] <= g1.prompt_tokens
    g2 = gen(smol, LONG, n=4, temperature=0.8, max_tokens=8, seed=2)
    # a repeat of the same prompt reuses the cached prefix a whole block at a time
    cached = (g1.prompt_tokens - 1) // PREFIX_BLOCK * PREFIX_BLOCK
    assert g1.prompt_tokens > 2 * PREFIX_BLOCK and cached >= 2 * PREFIX_BLOCK
    assert g2.extra["prompt_tokens_evaluated"] == g1.prompt_tokens - cached
    assert g2.prompt_tokens == g1.prompt_tokens


def test_a_calls_samples_do_not_depend_on_the_calls_before_it(smol):
    """What the cache held (another prompt sharing part of this one) changes no number of a call:
    a problem's answer is the same in any order, alone or among others, in any process."""
    other = [LONG[0], {"role": "user", "content": "Name three birds that cannot fly."}]
    short = [{"role": "user", "content": "Say hello."}]
    kw = dict(n=2, temperature=0.8, max_tokens=12, seed=5, logprobs=True)

    def lps(g):
        return [c.logprobs for c in g.completions], g.texts

    gen(smol, short, **kw)  # the cache holds nothing of LONG
    fresh = lps(gen(smol, LONG, **kw))
    gen(smol, other, **kw)  # the cache now holds the system prompt LONG shares, and other's question
    again = lps(gen(smol, LONG, **kw))
    assert again == fresh  # exact: logprobs to the last bit


def test_logprobs_present_only_when_asked(smol, reference):
    g = gen(smol, n=2, temperature=0.7, max_tokens=12, seed=3, logprobs=True)
    for c in g.completions:
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
        assert len(c.tokens) == c.completion_tokens
        assert all(lp <= 0.0 for lp in c.logprobs)
        assert "".join(c.tokens) == c.text
    plain = gen(smol, max_tokens=4)
    assert plain.completions[0].logprobs is None


def test_greedy_logprobs_agree_with_reference(smol, reference):
    ours = gen(smol, temperature=0.0, max_tokens=6, logprobs=True).completions[0]
    theirs = reference.create_chat_completion(MSGS, temperature=0.0, max_tokens=6, logprobs=True, top_logprobs=1)
    ref = [t["logprob"] for t in theirs["choices"][0]["logprobs"]["content"]]
    assert len(ref) == len(ours.logprobs)
    # Same tokens; values differ a little because llama.cpp's kernels for a
    # whole-prompt batch and for one token round the quantized weights differently.
    assert ours.tokens == [t["token"] for t in theirs["choices"][0]["logprobs"]["content"]]
    for a, b in zip(ours.logprobs, ref):
        assert a == pytest.approx(b, abs=0.25)


def test_generate_many_matches_separate_calls(smol):
    p1 = [{"role": "user", "content": "Name three fruits."}]
    p2 = [{"role": "user", "content": "Name three rivers in Europe."}]
    many = asyncio.run(smol.generate_many([p1, p2], GenParams(temperature=0.0, max_tokens=12)))
    one = gen(smol, p1, temperature=0.0, max_tokens=12)
    two = gen(smol, p2, temperature=0.0, max_tokens=12)
    assert [m.texts for m in many] == [one.texts, two.texts]
    assert [m.prompt_tokens for m in many] == [one.prompt_tokens, two.prompt_tokens]


def test_stop_strings_cut_the_text(smol):
    g = gen(smol, temperature=0.0, max_tokens=40, stop=("4.",))
    full = gen(smol, temperature=0.0, max_tokens=40)
    assert "4." in full.completions[0].text
    assert "4." not in g.completions[0].text
    assert full.completions[0].text.startswith(g.completions[0].text)
    assert g.completions[0].finish_reason == "stop"


def test_bad_inputs(smol, tmp_path):
    with pytest.raises(ConfigError):
        GenParams(n=0)
    with pytest.raises(ConfigError):
        gen(smol, max_tokens=100_000)  # more than the context holds
    with pytest.raises(UnknownModelError):
        LlamaCppModel("no-such-model")
    with pytest.raises(UnknownModelError):
        LlamaCppModel(str(tmp_path / "missing.gguf"))


def test_cancelled_call_stops_decoding(smol):
    eng = smol.engine
    before = eng.tokens_generated

    async def cancel_early():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                smol.generate([{"role": "user", "content": "Write a very long essay about rivers."}],
                              GenParams(n=4, temperature=0.9, max_tokens=1500, seed=1)),
                timeout=0.5)

    asyncio.run(cancel_early())
    assert eng.lock.acquire(timeout=30)  # the worker thread let go of the model
    eng.lock.release()
    assert eng.tokens_generated - before < 4 * 1500
    assert gen(smol, max_tokens=4).completions[0].completion_tokens > 0  # still usable


def test_lone_surrogate_is_a_config_error(smol):
    with pytest.raises(ConfigError, match="not valid Unicode"):
        gen(smol, [{"role": "user", "content": "bad \udc80 text"}], max_tokens=2)
