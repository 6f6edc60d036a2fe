"""The static plan of the ``sparse`` back end: which latents to eliminate when.

Latent sites sitting in the same plates form a *group*, one small vector per
plate index. Every factor lands in the group of its innermost latent, summed
over its other plates. Groups are eliminated innermost first: eliminating a
group couples, for each of its plate indices, the outer groups it touched (its
*scope*); that coupling is passed on to the innermost of them. This stays
linear in the plate sizes as long as every scope is a chain of nested plates
(a tree of plates: globals, locals, locals nested in those, ...). Anything
else (crossed plates, a site that depends on a latent outside its own plates)
is refused with an error naming the sites and plates.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch

from guide_core import PlateFacts

from .structure import GaussianStructure, plate_names, plate_shape

__all__ = ["EliminationPlan", "Group", "Placement"]

Key = frozenset  # a group is keyed by its frozenset of PlateFacts

_ADVICE = (
    "; the sparse back end handles plates that nest like a tree; use "
    "AutoGaussian(model, backend='dense') (any structure) or backend='funsor'"
)


@attrs.frozen(eq=False)
class Group:
    """Latent sites in the same plates, eliminated together.

    Attributes
    ----------
    plates : frozenset of PlateFacts
    members : tuple of str
        Its latent sites, in model order.
    offsets : dict
        ``{site: (start, stop)}`` of each member in the group's vector.
    size : int
        Coordinates per plate index.
    batch : torch.Size
        ``plate_shape(plates)`` padded to the plan's plate nesting.
    scope : tuple of frozenset
        Outer groups it is coupled with when eliminated, innermost first.
    layout : dict
        ``{group plates: (start, stop)}`` in the vector ``[self, *scope]``.
    sum_dims : tuple of int
        Batch dims to sum its message over (plates the receiver lacks).
    """

    plates: frozenset[PlateFacts]
    members: tuple[str, ...]
    offsets: dict[str, tuple[int, int]]
    size: int
    batch: torch.Size
    scope: tuple[frozenset, ...] = ()
    layout: dict[frozenset, tuple[int, int]] = attrs.field(factory=dict)
    sum_dims: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Coordinates of ``[self, *scope]``."""
        return max(stop for _, stop in self.layout.values())

    @property
    def receiver(self) -> frozenset | None:
        """The group its message goes to (the innermost of its scope)."""
        return self.scope[0] if self.scope else None


@attrs.frozen(eq=False)
class Placement:
    """Where a factor or a message lands: its group, the positions of its
    coordinates in the group's vector, and the batch dims to sum first."""

    group: frozenset
    index: torch.Tensor  # (k,) positions in the receiving group's vector
    sum_dims: tuple[int, ...]


def _describe(structure: GaussianStructure, plates: frozenset) -> str:
    names = [n for n, v in structure.latents.items() if v.plates == plates]
    return f"{', '.join(repr(n) for n in names)} (plates {plate_names(plates)})"


def _comparable(a: frozenset, b: frozenset) -> bool:
    return a <= b or b <= a


def _sum_dims(outer: Iterable[PlateFacts], inner: Iterable[PlateFacts]) -> tuple:
    """Batch dims of the plates in ``outer`` but not in ``inner``."""
    return tuple(sorted(p.dim for p in set(outer) - set(inner)))


class EliminationPlan:
    """The groups, their elimination order, and where each factor goes.

    Parameters
    ----------
    structure : GaussianStructure

    Raises
    ------
    NotImplementedError
        The plates do not nest like a tree; the message names the sites and
        plates involved and suggests the ``dense`` back end.
    """

    def __init__(self, structure: GaussianStructure):
        self.structure = structure
        self.depth = depth = structure.max_plate_nesting()
        members: dict[frozenset, list[str]] = {}
        for name, latent in structure.latents.items():
            members.setdefault(latent.plates, []).append(name)
        # Innermost (most plates) first; ties broken by plate names, for a
        # deterministic order.
        self.order: list[frozenset] = sorted(
            members, key=lambda k: (-len(k), sorted(p.name for p in k))
        )
        scopes: dict[frozenset, set] = {k: set() for k in members}
        homes: dict[str, frozenset] = {}
        for name, factor in structure.factors.items():
            touched = set()
            for u in factor.upstreams:
                broken = structure.broken_plates(name, u)
                if broken:
                    raise NotImplementedError(
                        f"site {name!r} depends on {u!r} across the plates "
                        f"{plate_names(broken)} that {name!r} is not in" + _ADVICE
                    )
                touched.add(structure.latents[u].plates)
            for a in touched:
                for b in touched:
                    if not _comparable(a, b):
                        raise NotImplementedError(
                            f"site {name!r} couples {_describe(structure, a)} with "
                            f"{_describe(structure, b)}, whose plates cross" + _ADVICE
                        )
            home = max(touched, key=len)
            homes[name] = home
            scopes[home] |= touched - {home}
        self.groups: dict[frozenset, Group] = {}
        for key in self.order:
            scope = scopes[key]
            for a in scope:
                for b in scope:
                    if not _comparable(a, b):
                        raise NotImplementedError(
                            f"eliminating {_describe(structure, key)} couples "
                            f"{_describe(structure, a)} with "
                            f"{_describe(structure, b)}, whose plates cross" + _ADVICE
                        )
            chain = tuple(sorted(scope, key=len, reverse=True))
            if chain:
                scopes[chain[0]] |= set(chain[1:])
            offsets, pos = {}, 0
            for name in members[key]:
                numel = structure.latents[name].event_numel
                offsets[name] = (pos, pos + numel)
                pos += numel
            self.groups[key] = Group(
                key, tuple(members[key]), offsets, pos, plate_shape(key, depth)
            )
        for key in self.order:  # the layouts need every group's size
            group = self.groups[key]
            chain = tuple(sorted(scopes[key], key=len, reverse=True))
            layout, pos = {}, 0
            for k in (key, *chain):
                layout[k] = (pos, pos + self.groups[k].size)
                pos += self.groups[k].size
            sum_dims = _sum_dims(key, chain[0]) if chain else ()
            self.groups[key] = attrs.evolve(
                group, scope=chain, layout=layout, sum_dims=sum_dims
            )
        self.factors = {n: self._place_factor(n, homes[n]) for n in homes}
        self.messages = {
            k: self._place_message(g) for k, g in self.groups.items() if g.scope
        }
        # What each group receives, in a fixed order, and where it all goes.
        self.inbox: dict[frozenset, list[tuple[str, object]]] = {
            k: [] for k in self.order
        }
        for name, place in self.factors.items():
            self.inbox[place.group].append(("factor", name))
        for key in self.order:
            if key in self.messages:
                self.inbox[self.messages[key].group].append(("message", key))

    def _coords(self, receiver: frozenset, group: frozenset, lo: int, hi: int):
        start, _ = self.groups[receiver].layout[group]
        return torch.arange(start + lo, start + hi, device="cpu")

    def _place_factor(self, name: str, home: frozenset) -> Placement:
        factor = self.structure.factors[name]
        parts = []
        for u in factor.upstreams:
            plates = self.structure.latents[u].plates
            lo, hi = self.groups[plates].offsets[u]
            parts.append(self._coords(home, plates, lo, hi))
        return Placement(home, torch.cat(parts), _sum_dims(factor.plates, home))

    def _place_message(self, group: Group) -> Placement:
        parts = [
            self._coords(group.receiver, k, 0, self.groups[k].size) for k in group.scope
        ]
        return Placement(group.receiver, torch.cat(parts), group.sum_dims)

    def scope_index(self, key: frozenset) -> torch.Tensor:
        """Positions of ``key``'s scope coordinates in its receiver's vector."""
        return self.messages[key].index
