"""Prices as data: shipped table, user overrides, price-as, and loud unknowns."""

from __future__ import annotations

import pytest

from cope.errors import ConfigError, PriceError
from cope.pricing import PriceTable


def test_shipped_table_has_required_models_with_source_and_date():
    t = PriceTable.load()
    for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gemini-2.0-flash"):
        p = t.get(name)
        assert p.input_per_m > 0 and p.output_per_m > p.input_per_m
        assert p.source and p.date[:2] == "20"


def test_cost_formula():
    p = PriceTable.load().get("gpt-4o-mini")
    assert p.cost(1_000_000, 0) == pytest.approx(p.input_per_m)
    assert p.cost(2000, 500) == pytest.approx((2000 * p.input_per_m + 500 * p.output_per_m) / 1e6)


def test_unknown_api_model_is_an_error_not_zero():
    t = PriceTable.load()
    with pytest.raises(PriceError, match="no price for 'my-model'"):
        t.for_spec("openai/my-model")


def test_local_is_free_and_price_as_charges_another_row():
    t = PriceTable.load()
    free = t.for_spec("local/qwen2.5-coder-1.5b")
    assert free.cost(1000, 1000) == 0.0 and free.note == ""
    as_mini = t.for_spec("local/qwen2.5-coder-1.5b", price_as="gpt-4o-mini")
    assert as_mini.cost(1000, 1000) == t.get("gpt-4o-mini").cost(1000, 1000) > 0
    assert "priced as gpt-4o-mini" in as_mini.note
    with pytest.raises(PriceError):
        t.for_spec("local/x", price_as="no-such-model")


def test_user_file_overrides_adds_and_declares_zero(tmp_path, monkeypatch):
    f = tmp_path / "prices.toml"
    f.write_text(
        '[models."gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\nsource = "my contract"\n'
        '[models."my-model"]\ninput = 0\noutput = 0\n'
    )
    t = PriceTable.load(f)
    assert t.get("gpt-4o-mini").input_per_m == 1.0
    assert t.get("gpt-4o-mini").source == "my contract"
    assert t.for_spec("openai/my-model").cost(10**6, 10**6) == 0.0
    assert t.version != PriceTable.load().version
    monkeypatch.setenv("COPE_PRICES", str(f))
    assert PriceTable.load().get("my-model").output_per_m == 0.0


@pytest.mark.parametrize("text", [
    "not toml [",
    '[models."m"]\ninput = "cheap"\noutput = 1\n',
    '[models."m"]\ninput = 1\n',
    '[models."m"]\ninput = -1\noutput = 1\n',
])
def test_bad_price_files(tmp_path, text):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        PriceTable.load(f)


def test_missing_price_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PriceTable.load(tmp_path / "nope.toml")


def test_a_model_only_the_kept_source_knows_is_priced_and_labelled_with_it():
    """genai-prices' bundled snapshot sits under the shipped table and the user's file; no network."""
    from cope.errors import PriceError
    from cope.pricing import PriceTable

    table = PriceTable.load()
    assert "gpt-5-mini" not in table.prices
    p = table.for_spec("openai/gpt-5-mini")
    assert p.input_per_m > 0 and p.output_per_m > p.input_per_m and p.source.startswith("genai-prices 0.2.3")
    assert table.for_spec("openai/gpt-4o-mini").source == "OpenAI API pricing page"  # the shipped row wins
    with pytest.raises(PriceError, match="no price for 'no-such-model-9'"):
        table.for_spec("openai/no-such-model-9")  # unknown everywhere: an error, never $0
