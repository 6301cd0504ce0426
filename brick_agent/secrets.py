"""Secret values (CHAP passwords) that never show up in reprs, logs or errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MASK = "***"


class Secret:
    """Holds a secret string; ``str``/``repr``/format give the mask, ``reveal()`` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # never pickled into logs or privsep traces by accident
        raise TypeError("Secret values cannot be pickled; pass secret.reveal() explicitly")


def mask_text(text: str, secrets: Iterable[str | Secret]) -> str:
    """``text`` with every occurrence of each secret replaced by the mask."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return text


def mask_argv(argv: Sequence[str], secrets: Iterable[str | Secret]) -> list[str]:
    """A copy of ``argv`` fit for logs: each secret replaced by the mask."""
    values = [s.reveal() if isinstance(s, Secret) else s for s in secrets]
    return [mask_text(arg, values) for arg in argv]
