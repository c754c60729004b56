"""Named registries: the one place where the stages, methods and judges of the project are listed.

Each kind of extension point (a pipeline stage, an evaluated method, an evaluation judge) is a :class:`Registry`
of definitions keyed by the name a config uses. Built-in entries are registered by the module that defines them;
a user (or a test) adds one with :meth:`Registry.register` without editing any existing module, and validation,
help texts and the orchestrator read the same registry, so a name that is registered is also accepted.

Example::

    METHODS.register(MethodDef(name="my_method", ...))
    METHODS.choose("my_method", "methods")   # the definition, or ConfigError naming the key
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from sipo.errors import ConfigError


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """An ordered ``name -> definition`` map with checked registration; iteration follows registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T, *, replace: bool = False, before: str | None = None) -> T:
        """Add ``entry`` under ``entry.name``, last or just ``before`` a registered entry (for registries whose
        order matters, such as the stages'); registering another entry under a taken name needs ``replace``."""
        name = entry.name
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"{self.kind} name {name!r} must be letters, digits, '_' or '-'")
        if name in self._entries and self._entries[name] is not entry and not replace:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if before is not None and before not in self._entries:
            raise ValueError(f"cannot register {self.kind} '{name}' before '{before}': not registered")
        self._entries[name] = entry
        if before is not None:
            self._entries.pop(name)
            items = list(self._entries.items())
            at = [k for k, _ in items].index(before)
            self._entries = dict([*items[:at], (name, entry), *items[at:]])
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and plugins that registered one temporarily)."""
        self._entries.pop(name, None)

    def choose(self, name: str, key: str) -> T:
        """The entry called ``name``; a name that is not registered is a user mistake about config ``key``."""
        if name not in self._entries:
            raise ConfigError(f"config key '{key}': unknown {self.kind} '{name}' (choose from {', '.join(self)})")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())
