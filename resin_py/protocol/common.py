"""Types shared by both protocols and the loop (kept apart so that a v0 resin
never imports the v1/ETF machinery: startup time matters).

Start-up diet: the modules a v0 session loads import neither `typing`,
`dataclasses` nor `enum` at run time (together ~25 ms of a resin's start on a
slow machine). mypy still sees the real thing: it treats any name
`TYPE_CHECKING` as true, so what is under `if TYPE_CHECKING:` is what it
checks, and the `else:` branch is what runs. Two cheap stand-ins live here:

- `Record`: a frozen value class in the manner of `@dataclass(frozen=True)`
  (mypy sees it as one through `dataclass_transform`): fields are the class
  annotations, in order, with their defaults; construction by position or
  keyword; immutable; `==`, `hash`, `repr`; `__slots__`.
- `LiteEnum` / `LiteIntEnum`: at run time the base of a class written like an
  `Enum` / `IntEnum` (mypy sees those). Its UPPER_CASE attributes become its
  members, which have `.name` and `.value`; `Kind(value)` finds a member
  (ValueError if none) and `iter(Kind)` lists them. `LiteIntEnum` members
  are ints, as IntEnum's.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterator
    from enum import IntEnum
    from typing import Any, ClassVar, Literal, TypeAlias, dataclass_transform
else:
    def dataclass_transform(**kwargs):
        return lambda cls: cls


# --- frozen value classes ----------------------------------------------------


@dataclass_transform(frozen_default=True)
class _RecordType(type):
    """Turns the annotated class attributes of a Record into slots and fields."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> _RecordType:
        inherited: tuple[str, ...] = ()
        defaults: dict[str, Any] = {}
        for base in bases:
            inherited += getattr(base, "_fields", ())
            defaults.update(getattr(base, "_defaults", {}))
        # With `from __future__ import annotations` the annotations are strings.
        own = tuple(k for k, ann in ns.get("__annotations__", {}).items()
                    if not str(ann).startswith(("ClassVar", "typing.ClassVar"))
                    and k not in inherited)
        for key in own:
            if key in ns:
                defaults[key] = ns.pop(key)
            elif defaults:
                raise TypeError(f"{name}: field {key!r} without a default follows one with")
        ns["__slots__"] = own
        ns["_fields"] = ns["__match_args__"] = inherited + own
        ns["_defaults"] = defaults
        return super().__new__(mcls, name, bases, ns)


_MISSING = object()


class Record(metaclass=_RecordType):
    """Base of small frozen value classes (see the module's docstring)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        setter = object.__setattr__
        if not kwargs and len(args) == len(fields):
            # Every field by position (what the hot paths build): no checks left.
            for key, value in zip(fields, args, strict=True):
                setter(self, key, value)
            return
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments "
                            f"but {len(args)} were given")
        for key, value in zip(fields, args, strict=False):
            if key in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for {key!r}")
            setter(self, key, value)
        for key in fields[len(args):]:
            value = kwargs.pop(key, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(key, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() missing argument {key!r}")
            setter(self, key, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected arguments "
                            f"{', '.join(map(repr, kwargs))}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, key) for key in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # copy and pickle
        return type(self), self._values()


# --- enums ---------------------------------------------------------------------


class _EnumType(type):
    """The metaclass of the run-time enum stand-ins."""

    _members: dict[object, Any]

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> _EnumType:
        values = {k: ns.pop(k) for k in [k for k in ns if k.isupper()]}
        cls = super().__new__(mcls, name, bases, ns)
        cls._members = {}
        for key, value in values.items():
            member = int.__new__(cls, value) if issubclass(cls, int) else object.__new__(cls)
            member.__dict__.update(name=key, value=value)
            type.__setattr__(cls, key, member)
            cls._members[value] = member
        return cls

    def __call__(cls, value: object) -> Any:
        try:
            return cls._members[value]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a valid {cls.__name__}") from None

    def __iter__(cls) -> Iterator[Any]:
        return iter(cls._members.values())

    def __len__(cls) -> int:
        return len(cls._members)


class LiteEnum(metaclass=_EnumType):
    """Run-time stand-in for `enum.Enum` (see the module's docstring)."""

    name: str
    value: Any

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {self.value!r}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __reduce__(self) -> tuple[type, tuple[Any]]:
        return type(self), (self.value,)


class LiteIntEnum(LiteEnum, int):
    """Run-time stand-in for `enum.IntEnum`: its members are ints."""

    __str__ = int.__repr__  # as IntEnum's (3.11+)
    __format__ = int.__format__


if not TYPE_CHECKING:
    IntEnum = LiteIntEnum


class StreamKind(IntEnum):
    STDOUT = 1
    STDERR = 2


# --- spawn options ---------------------------------------------------------------

# String aliases: importable at run time, and no `typing` needed to build them.
StdinMode: TypeAlias = "Literal['pipe', 'null']"
StderrMode: TypeAlias = "Literal['capture', 'stdout', 'discard']"


class SpawnOptions(Record):
    cd: bytes | None = None
    # The working directory of this OS process (pid) at the spawn, read by
    # resin and then used as `cd`; None: `cd` (or resin's own).
    cd_of: int | None = None
    env: tuple[tuple[bytes, bytes | None], ...] = ()
    clear_env: bool = False
    arg0: bytes | None = None
    stdin: StdinMode = "pipe"
    stderr: StderrMode = "capture"
    credit: int | None = None  # None: infinity
    # cgroup interface files to write in the child's cgroup before it starts,
    # as (file, content): ("memory.max", "1048576"), ("cpu.max", "50000 100000")
    cgroup: tuple[tuple[str, str], ...] = ()
    # A pseudo-terminal of (rows, cols) as the child's stdin, stdout and
    # stderr (its controlling terminal); None: pipes.
    pty: tuple[int, int] | None = None
    # Run as this user / group (a name, or a uid / gid); None: resin's own.
    user: int | bytes | None = None
    group: int | bytes | None = None
    # Resource limits set in the child before exec, as (name, soft, hard),
    # name as in the protocol ("nofile", "as", ...), None: RLIM_INFINITY.
    rlimits: tuple[tuple[str, int | None, int | None], ...] = ()
    # Streams whose pipe the client reads itself ("direct output", docs/
    # protocol.md §4.3.3): resin keeps the read end open but never reads it.
    direct: tuple[StreamKind, ...] = ()
    # ... after resin relayed this many bytes of the stream (0: from the start).
    direct_after: int = 0
