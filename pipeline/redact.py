"""Secrets out of every message before it is logged or stored.

AWS quotes requests back in some errors: a signature mismatch answers with the canonical
request, security-token header included
(https://docs.aws.amazon.com/IAM/latest/UserGuide/signature-v4-troubleshooting.html). Every
error message goes through ``redact`` where it is made (``CallError``) and every log line where
it is written, so neither a header, a signature, a key ID nor the values of the credentials in
use can reach ``events.jsonl``, ``summary.json``, a Parquet file, stdout or stderr.
"""

from __future__ import annotations

import re

MASK = "[redacted]"
_PATTERNS = (
    # headers and query parameters that carry a token, a signature or a credential scope
    re.compile(r"(?i)(x-amz-security-token\s*[:=]\s*)[^\s&,;\"'<>]+"),
    re.compile(r"(?i)(x-amz-signature\s*[:=]\s*)[^\s&,;\"'<>]+"),
    re.compile(r"(?i)(x-amz-credential\s*[:=]\s*)[^\s&,;\"'<>]+"),
    re.compile(r"(?i)(\bSignature\s*=\s*)[^\s&,;\"'<>]+"),
    re.compile(r"(?i)(\bCredential\s*=\s*)[^\s&,;\"'<>]+"),
    re.compile(r"(?i)(\bauthorization\s*:\s*)[^\r\n]+"),
    # credentials written as fields (config files, JSON answers quoted back)
    re.compile(r"(?i)((?:aws_secret_access_key|aws_session_token|secretaccesskey|sessiontoken"
               r"|secret_key|session_token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)
# access key IDs (AKIA long-term, ASIA temporary), wherever they stand
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
_known: set[str] = set()


def remember(*secrets: str | None) -> None:
    """The values of the credentials in use: masked wherever they appear, in any form."""
    _known.update(s for s in secrets if s and len(s) >= 8)


def redact(text: str) -> str:
    if not text:
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    text = _KEY_ID.sub(MASK, text)
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
