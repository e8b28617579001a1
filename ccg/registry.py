"""Name -> object registries for the pluggable parts (systems, CG maps, flow backends, z
proposals).

Each registry lives next to the classes it holds; a part joins it with a decorator::

    SYSTEMS = Registry("system")

    @SYSTEMS.register("alanine-dipeptide", kind="molecular", default_map="phi-psi")
    def alanine_dipeptide(**options) -> OpenMMSystem: ...

Configurations validate their names against the registries before any work starts, and an
unknown name is an error that lists the valid ones (``Unknown system "x". Must be one of
[...]``). A registry is a read-only mapping from names to the registered objects; `info(name)`
returns the keywords given at registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A named set of pluggable parts of one kind.

    Args:
        kind: what the entries are, for messages ("system", "CG map", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under `name` (with `info`)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"Expected a non-empty {self.kind} name; got {name!r}.")

        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f'A {self.kind} named "{name}" is registered already '
                                 f"({self._entries[name]!r}); choose another name.")
            self._entries[name] = obj
            self._info[name] = dict(info)
            return obj

        return decorate

    def resolve(self, name: object) -> T:
        """The entry registered as `name`; ValueError naming the valid names otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f'Unknown {self.kind} "{name}". Must be one of {self.names()}.')
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        """The keywords `name` was registered with (a copy)."""
        self.resolve(name)
        return dict(self._info[name])

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
