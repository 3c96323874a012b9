"""Target options: each target declares the task params it takes as a frozen dataclass of `option()`
fields, checked by the shared validators here before any task runs.

    @dataclass(frozen=True)
    class MyOptions(TargetOptions):
        threads: Optional[int] = option(None, integer(1, 1024, allow_none=True))

`MyOptions.parse(params, source)` checks each given value, applies the defaults and runs the
dataclass's `__post_init__`, where checks that involve several options raise OptionConflict.
Every problem becomes one ConfigError line naming the task and the option.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type, TypeVar

from core.errors import ConfigError

#: A validator: (value, option name) -> what is wrong with it, or None.
Check = Callable[[Any, str], Optional[str]]

T = TypeVar("T", bound="TargetOptions")


class OptionConflict(ValueError):
    """Options that are each valid but cannot be combined (raised from __post_init__)."""


def option(default: Any, check: Check) -> Any:
    """A dataclass field holding one task option: its default and its validator."""
    return field(default=default, metadata={"check": check})


def boolean() -> Check:
    """true or false."""
    return lambda v, name: None if isinstance(v, bool) else "params.{} must be true or false, got {!r}".format(name, v)


def choice(*allowed: str) -> Check:
    """One of the allowed strings."""
    def check(v: Any, name: str) -> Optional[str]:
        if isinstance(v, str) and v in allowed:
            return None
        return "unknown params.{} {!r} (allowed: {})".format(name, v, ", ".join(allowed))
    return check


def integer(lo: int, hi: int, allow_none: bool = False) -> Check:
    """An integer from lo to hi (booleans are not integers here)."""
    def check(v: Any, name: str) -> Optional[str]:
        if v is None and allow_none:
            return None
        if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
            return None
        return "params.{} must be an integer from {} to {}, got {!r}".format(name, lo, hi, v)
    return check


def text(what: str = "a non-empty string") -> Check:
    """A non-empty string (a path, say); `what` says what it must be in the error line."""
    def check(v: Any, name: str) -> Optional[str]:
        if isinstance(v, str) and v.strip():
            return None
        return "params.{} must be {}, got {!r}".format(name, what, v)
    return check


@dataclass(frozen=True)
class TargetOptions:
    """A target's options with their defaults; subclasses add `option()` fields."""

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The params a task may set for this target, besides the common ones."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls: Type[T], given: Mapping[str, Any], source: str) -> T:
        """The options of a task (given: its params; others are ignored), checked; ConfigError on a bad one."""
        values = {}
        for f in fields(cls):
            if f.name in given:
                problem = f.metadata["check"](given[f.name], f.name)
                if problem:
                    raise ConfigError("{}: {}".format(source, problem))
                values[f.name] = given[f.name]
        try:
            return cls(**values)
        except OptionConflict as exc:
            raise ConfigError("{}: {}".format(source, exc)) from None

    def to_dict(self) -> Dict[str, Any]:
        """Every option with the value used, defaults included (for the result)."""
        return asdict(self)
