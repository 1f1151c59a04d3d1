"""Error types shared by the whole project, typed by who is at fault.

- `InvalidInput`: the input came from outside (a peer, a caller, a file) and is wrong. The
  receiver decides what that means: drop and penalise a peer, or print a clear message and
  exit non-zero for an operator. Every instance carries a stable reason `code`.
- `InvariantViolation`: our own state broke a rule it must keep. Never caught to continue.
"""

from __future__ import annotations


class CarechainError(Exception):
    """Base of every error carechain raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidInput(CarechainError):
    """Input from outside is malformed or breaks a rule; nothing was changed."""

    code = "invalid_input"


class DecodeError(InvalidInput):
    """Bytes are not the canonical encoding of the expected value."""

    code = "decode_error"


class SignatureError(InvalidInput):
    """A signature does not verify for the claimed key, purpose and chain."""

    code = "bad_signature"


class AddressError(InvalidInput):
    """An address string is malformed or its checksum does not match."""

    code = "bad_address"


class InvariantViolation(CarechainError):
    """Our own state broke an invariant: a bug. Crash loudly; never continue."""

    code = "invariant_violation"
