"""Endpoint keys: generate, verify, regenerate, store as hashes only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.auth import EndpointKeys, require_key
from shared.auth.keys import KEY_BYTES
from shared.errors import AuthenticationError

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


def test_generated_keys_verify_by_slot() -> None:
    record, primary, secondary = EndpointKeys.generate("fraud", now=T0)
    assert primary != secondary
    assert len(primary) == len(secondary) == 43  # base64url of KEY_BYTES random bytes
    assert KEY_BYTES == 32
    assert record.verify(primary) == "primary"
    assert record.verify(secondary) == "secondary"
    assert record.verify(primary + "x") is None
    assert record.verify(primary[:-1]) is None
    assert (record.primary_created_at, record.secondary_created_at) == (T0, T0)


def test_record_holds_no_plaintext_and_round_trips_as_flat_json() -> None:
    record, primary, secondary = EndpointKeys.generate("fraud", now=T0)
    stored = record.model_dump(mode="json")
    assert set(stored) == {
        "endpoint",
        "primary",
        "secondary",
        "primary_created_at",
        "secondary_created_at",
    }
    assert all(isinstance(value, str) for value in stored.values())
    assert stored["primary"].startswith("hmac-sha256$")
    text = record.model_dump_json()
    assert primary not in text and secondary not in text
    assert primary not in repr(record)
    restored = EndpointKeys.model_validate_json(text)
    assert restored == record
    assert restored.verify(secondary) == "secondary"


def test_salts_differ_so_equal_keys_hash_differently() -> None:
    first = EndpointKeys.generate("a", now=T0).record
    second = EndpointKeys.generate("a", now=T0).record
    salts = {first.primary.split("$")[1], first.secondary.split("$")[1]}
    salts |= {second.primary.split("$")[1], second.secondary.split("$")[1]}
    assert len(salts) == 4


def test_regenerate_replaces_one_key_and_returns_it_once() -> None:
    record, primary, secondary = EndpointKeys.generate("fraud", now=T0)
    rotated, new_primary = record.regenerate("primary", now=T1)
    assert rotated.verify(primary) is None
    assert rotated.verify(new_primary) == "primary"
    assert rotated.verify(secondary) == "secondary"
    assert (rotated.primary_created_at, rotated.secondary_created_at) == (T1, T0)
    assert record.verify(primary) == "primary"  # the old record is unchanged (frozen)
    again, new_secondary = rotated.regenerate("secondary", now=T1)
    assert again.verify(secondary) is None
    assert again.verify(new_secondary) == "secondary"
    assert again.verify(new_primary) == "primary"


def test_regenerate_refuses_an_unknown_slot() -> None:
    record = EndpointKeys.generate("fraud").record
    with pytest.raises(ValueError) as info:
        record.regenerate("tertiary")  # type: ignore[arg-type]
    assert str(info.value) == "key slot 'tertiary' is not known; expected primary or secondary"


def test_require_key() -> None:
    record, primary, _ = EndpointKeys.generate("fraud")
    assert require_key(record, primary) == "primary"
    with pytest.raises(AuthenticationError) as info:
        require_key(record, "nope")
    assert (info.value.error, str(info.value)) == (
        "invalid_token",
        "the key is not valid for endpoint 'fraud'",
    )


def test_stored_hash_must_have_the_hash_format() -> None:
    record = EndpointKeys.generate("fraud", now=T0).record
    stored = record.model_dump(mode="json")
    stored["primary"] = "plaintext-key"
    with pytest.raises(ValidationError):
        EndpointKeys.model_validate(stored)


RECORD, PRIMARY, SECONDARY = EndpointKeys.generate("fuzz", now=T0)


@given(st.text() | st.text(alphabet="\ud800\udfff\x00é", max_size=5) | st.just("a" * 100_000))
def test_any_presented_string_is_compared_through_fixed_length_digests(presented: str) -> None:
    # Non-ASCII, lone surrogates, empty and huge values all hash to 32 bytes before the
    # constant-time comparison, so none of them raises or short-circuits.
    expected = {PRIMARY: "primary", SECONDARY: "secondary"}.get(presented)
    assert RECORD.verify(presented) == expected
