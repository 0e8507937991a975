"""Credential redaction (issue 17, class 5): URL user info, secret query values, key-shaped tokens; env-var names."""

import logging

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import append_jsonl, atomic_write_json, read_jsonl
from cotdistill.utils.redact import (
    check_env_var_name,
    install_log_redaction,
    redact,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize("raw, clean", [
    ("http://user:s3cret@host:8000/v1", "http://***@host:8000/v1"),
    ("https://only-a-token@api.example.com/v1", "https://***@api.example.com/v1"),
    ("see http://a:b@h/x and https://c:d@k/y.", "see http://***@h/x and https://***@k/y."),
    ("http://host/v1?api_key=abc123&model=m", "http://host/v1?api_key=***&model=m"),
    ("http://host/v1?x=1&token=t0k3n#frag", "http://host/v1?x=1&token=***#frag"),
    ("https://h/v1?x-api-key=abc&X-Amz-Signature=f00&client_secret=s",
     "https://h/v1?x-api-key=***&X-Amz-Signature=***&client_secret=***"),
    ("http://host/v1?model=m&limit=3", "http://host/v1?model=m&limit=3"),
    ("key sk-abcdef0123456789 pasted", "key *** pasted"),
    ("hf_ABCDEFGHIJKLMNOPQRSTu", "***"),
])
def test_redact_text(raw, clean):
    assert redact_text(raw) == clean
    assert redact_url(raw) == clean


@pytest.mark.parametrize("text", [
    "http://127.0.0.1:8000/v1", "mail me at a@b.com", "x = 3 + 4", "task-0123456789 risk-assessment", "",
    "The answer is: 42",
])
def test_text_without_credentials_is_unchanged(text):
    assert redact_text(text) == text


def test_redact_walks_json_values():
    obj = {"base_url": "http://u:p@h/v1", "n": 3, "list": ["http://x:y@z", 1.5], "http://k:v@h": None}
    assert redact(obj) == {"base_url": "http://***@h/v1", "n": 3, "list": ["http://***@z", 1.5],
                           "http://***@h": None}
    assert redact_url(None) is None


def test_writers_and_errors_never_hold_credentials(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"url": "http://u:pw-123@h/v1"})
    append_jsonl(tmp_path / "b.jsonl", [{"error": "cannot reach http://u:pw-123@h/v1"}])
    for p in tmp_path.iterdir():
        assert "pw-123" not in p.read_text()
    assert list(read_jsonl(tmp_path / "b.jsonl")) == [{"error": "cannot reach http://***@h/v1"}]
    assert "pw-123" not in str(CotdistillError("teacher at http://u:pw-123@h/v1: HTTP 401"))


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "_X", "KEY2"])
def test_env_var_names_pass(name):
    check_env_var_name(name, "k")
    check_env_var_name(None, "k")


@pytest.mark.parametrize("value", ["sk-live-abcdef0123456789", "my key", "abc$def", "1ABC", ""])
def test_values_that_are_not_env_var_names_are_refused_without_echo(value):
    with pytest.raises(ValueError) as e:
        check_env_var_name(value, "teachers[0].api_key_env")
    assert str(e.value).startswith("teachers[0].api_key_env: ")
    assert not value or value not in str(e.value)


def test_log_records_are_redacted(caplog):
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.WARNING):
        logging.getLogger("httpx.fake").warning("retrying %s", "http://u:pw-999@h/v1")
    assert "pw-999" not in caplog.text and "http://***@h/v1" in caplog.text
