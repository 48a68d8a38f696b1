"""The rl probe's options (`-o rl.NAME=VALUE`; `rl:<env>` sets `env`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Optional

from ..probes.options import ProbeOptions, fail, option

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class RLOptions(ProbeOptions):
    """No `limit`: the rl probe has no list of items; episodes x horizon x seeds set its size."""

    PROBE: typing.ClassVar[str] = "rl"

    env: str = option("lending", "environment (from rl:<env>): lending, admission or attention")
    episodes: int = option(4, "episodes per seed (--episodes)")
    horizon: int = option(50, "steps per episode (--horizon)")
    seeds: tuple[int, ...] = option(DEFAULT_SEEDS, "environment seeds, comma-separated (--seeds)")
    reference_policy: Optional[str] = option("equal-opportunity", "policy to measure agreement with "
                                                                  "(none: skip)")
    action_words: Any = option(None, "the words the model chooses between, '|'-separated with their spaces "
                                     "(' A| B'; default: the environment's)", metadata={"type": "text"})
    baselines: bool = option(True, "also run the threshold baselines on the same seeds, for context")
    every: int = option(1, "stride of the timeseries table (every N steps)")
    group_names: Any = option(None, "names the prompts give the groups, '|'-separated (default: the "
                                    "environment's)", metadata={"type": "text"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from .envs import resolve_env_id

        resolve_env_id(self.env)  # an unknown environment fails before the model loads
        if self.n_bootstrap == 0:
            fail("n_bootstrap", "0; the rl timeseries always carries intervals across replicates; expected at "
                                "least 10")
        for name in ("episodes", "horizon", "every"):
            if getattr(self, name) < 1:
                fail(name, f"{getattr(self, name)}; expected a positive integer (at least 1)")
        if not self.seeds:
            fail("seeds", "no seed; expected comma-separated integers")
        if len(set(self.seeds)) != len(self.seeds):
            fail("seeds", f"repeated seed in {','.join(map(str, self.seeds))}; replicates would be identical")
        for name in ("action_words", "group_names"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, list, tuple)):
                fail(name, f"{value!r}; expected '|'-separated text or a list")

    @property
    def reference(self) -> Optional[str]:
        ref = self.reference_policy
        return None if ref is None or ref.strip().lower() in ("", "none", "off", "false") else ref
