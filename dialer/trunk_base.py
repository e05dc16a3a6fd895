"""What every trunk kind shares: its fleet-wide limits, its error type, and how secrets are given."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr


if TYPE_CHECKING:
    from pathlib import Path


#: Unicode categories refused in SIP header fields: controls, format characters (zero-width, bidi
#: overrides), line and paragraph separators, unassigned and private-use code points.
CONTROL_CATEGORIES = frozenset({'Cc', 'Cf', 'Zl', 'Zp', 'Cn', 'Co', 'Cs'})


class TrunkConfigError(ValueError):
    """A trunks file that cannot be used; the message names the file, trunk and field."""


class TrunkLimits(BaseModel):
    """What the carrier allows; these are enforced across the whole fleet."""

    model_config = ConfigDict(extra='forbid', frozen=True)

    max_concurrent: int = Field(ge=1, le=100_000)
    calls_per_second: float = Field(gt=0, le=10_000)
    #: Calls that may start back to back before the per-second spacing applies (1 = strictly spaced).
    burst: int = Field(default=1, ge=1, le=10_000)

    @property
    def sends_per_window(self) -> int:
        """Creates allowed in any 1-s window: the whole calls per second (a carrier counts whole calls),
        or the burst when that is larger (the trunk is declared to take it)."""
        return max(1, math.floor(self.calls_per_second), self.burst)


def resolve_secret(
    trunk: str, field: str, inline: SecretStr | None, env: str | None, file: Path | None
) -> SecretStr | None:
    """A secret given inline, as ``<field>_env`` (an environment variable) or ``<field>_file``."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise TrunkConfigError(f'trunk {trunk!r}: field {field}_env: ${env} is not set')
        return SecretStr(value)
    if file is not None:
        try:
            return SecretStr(file.read_text(encoding='utf-8').strip())
        except OSError as exc:
            raise TrunkConfigError(f'trunk {trunk!r}: field {field}_file: cannot read {file}: {exc.strerror}') from None
    return inline
