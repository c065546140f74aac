"""What to do when the guard fires."""

from __future__ import annotations

from typing import Callable, Union, get_args

from .errors import ArgumentTypeError, ConfigError
from .events import Action, Flag

PolicyFn = Callable[[Flag], Action]
"""A custom policy: receives the :class:`Flag` and returns "halt", "continue" or "reflect".

It is asked at the first step of a run of consecutive flagged steps and again at each step of
the run whose P(<rf>) is above the highest P(<rf>) it was asked about in that run."""

PolicyLike = Union[Action, PolicyFn]

ACTIONS: tuple[str, ...] = get_args(Action)


def resolve_policy(policy: PolicyLike) -> PolicyFn:
    """Turn a policy name or callable into a callable; reject anything else."""
    if isinstance(policy, str):
        if policy not in ACTIONS:
            raise ConfigError(
                f"Unknown policy {policy!r}: use one of {', '.join(ACTIONS)} or a callable "
                "that takes a Flag and returns one of them."
            )
        action: Action = policy  # checked against ACTIONS above

        def fixed(flag: Flag) -> Action:
            return action

        return fixed
    if callable(policy):
        return policy
    raise ArgumentTypeError(f"policy must be one of {', '.join(ACTIONS)} or a callable, not {policy!r}")
