"""Keep credentials out of every file and message cotdistill writes.

A user may give a secret in a URL (``http://user:key@host/v1``, ``...?api_key=sk-...``) or paste a key where an
environment-variable *name* belongs (``api_key_env: sk-...``). The URL keeps working in memory (the HTTP client
sends its user info as basic auth); only what is written or printed is redacted: :mod:`cotdistill.utils.io`'s
writers, :func:`cotdistill.config.dump_config` and every :class:`~cotdistill.errors.CotdistillError` message pass
through :func:`redact_text`. Hand-written because no library we use redacts credentials inside free text
(``urllib.parse`` can rebuild one URL, but config dumps, records and error lines hold URLs inside other text).

This module imports nothing from cotdistill (errors.py and io.py import it).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user[:password]@  -> scheme://***@   (user info never contains '/', '@' or whitespace)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"'<>]+@")
# ?api_key=...&x-api-key=...&access_token=...&X-Amz-Signature=...  -> the value masked: any query parameter
# whose name holds a word used for credentials
_QUERY_SECRET = re.compile(
    r"(?i)([?&;][\w.\-]*(?:key|token|secret|password|passwd|pwd|auth|sig|signature|credential)[\w.\-]*=)"
    r"[^&;#\s\"'<>]+"
)
# well-known key shapes: OpenAI/Anthropic-style `sk-...`, Hugging Face `hf_...`, GitHub `ghp_...`, AWS access ids
_KEY_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def redact_url(url: str | None) -> str | None:
    """``url`` with any user info and credential-like query values replaced by ``***`` (None stays None)."""
    if url is None:
        return None
    return redact_text(str(url))


def redact_text(text: str) -> str:
    """Free text with URL credentials (user info, secret query values) and key-shaped tokens masked."""
    if not text or ("://" not in text and "=" not in text and not _KEY_SHAPES.search(text)):
        return text  # fast path: most text holds no URL at all
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return _KEY_SHAPES.sub(MASK, text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with :func:`redact_text` applied to every string (keys included)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {redact(k) if isinstance(k, str) else k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def looks_like_secret(value: str) -> bool:
    """True for a value that is not a plain env-var name and may be a key (so it must never be echoed)."""
    return not _ENV_NAME.match(value or "") or bool(_KEY_SHAPES.search(value or ""))


def check_env_var_name(value: str | None, where: str) -> None:
    """Raise ``ValueError`` (message without the value) unless ``value`` is a plain environment-variable name.

    ``where`` names the setting (``teachers[0].api_key_env``, ``--api-key-env``). The value is not repeated:
    a key pasted here would otherwise land in the error line, a terminal log or CI output.
    """
    if value is None:
        return
    if looks_like_secret(value):
        raise ValueError(f"{where}: expected the NAME of an environment variable holding the key (letters, digits, "
                         "underscores), not the key itself; the value is not shown")


def install_log_redaction() -> None:
    """Mask credentials in every log record from now on (any logger: ours, httpx's, transformers').

    Done with a record factory rather than a handler filter, so it holds whatever handlers the application
    adds later. Idempotent; the CLI calls it once per command.
    """
    import logging

    old = logging.getLogRecordFactory()
    if getattr(old, "_cotdistill_redacts", False):
        return

    def factory(*args, **kwargs):
        record = old(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    factory._cotdistill_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
