"""Dimension classes: which tensor dimensions must keep the same channels, found by unification.

Every dimension of every tensor seen while the model runs gets a class. An operation that ties two
dimensions (the input of a Linear and the columns of its weight, the two sides of a residual add)
merges their classes; one that makes channels interact (a normalisation over them, a softmax, a
slice, a model output) freezes its class. At the end each unfrozen class that holds weight
dimensions is a set of slices that can be removed together without changing anything else.

A dimension that a reshape splits (384 features into 12 heads of 32) has *factors*: the classes of
its parts, outermost first. Merging two dimensions that are products merges their factors, so
"the 12 heads of the query projection" and "the 12 heads feeding the output projection" end up as
one class, and pruning it removes whole heads from every weight that carries them.
"""

from __future__ import annotations

import math


class DimClasses:
    """Union-find over dimension classes, with sizes, freezing reasons and factorisations."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: dict[int, str] = {}  # root -> why its channels cannot be removed
        self.factors: dict[int, tuple[int, ...]] = {}  # root -> classes of its parts, outermost first

    def new(self, size: int, frozen: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        c = len(self.parent) - 1
        if frozen:
            self.frozen[c] = frozen
        return c

    def find(self, c: int) -> int:
        root = c
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[c] != root:  # path compression
            self.parent[c], c = root, self.parent[c]
        return root

    def freeze(self, c: int, reason: str) -> None:
        self.frozen.setdefault(self.find(c), reason)

    def is_frozen(self, c: int) -> bool:
        return self.find(c) in self.frozen

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.freeze(ra, "tied to a dimension of another size")
            self.freeze(rb, "tied to a dimension of another size")
            return
        self.parent[rb] = ra
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))
        fa, fb = self.factors.pop(ra, None), self.factors.pop(rb, None)
        if fa and fb:
            self.factors[ra] = fa
            self._unify_factors(ra, fa, fb)
        elif fa or fb:
            self.factors[ra] = fa or fb

    def _unify_factors(self, root: int, fa: tuple[int, ...], fb: tuple[int, ...]) -> None:
        if [self.size[self.find(x)] for x in fa] == [self.size[self.find(y)] for y in fb]:
            pairs = list(zip(fa, fb, strict=True))
        else:  # the same parts, grouped differently: tie the innermost ones
            la = [leaf for x in fa for leaf in self.leaves(x)]
            lb = [leaf for y in fb for leaf in self.leaves(y)]
            if [self.size[x] for x in la] != [self.size[y] for y in lb]:
                self.freeze(root, "reshaped in two different ways")
                return
            pairs = list(zip(la, lb, strict=True))
        for x, y in pairs:
            self.union(x, y)

    def leaves(self, c: int) -> list[int]:
        """The innermost factors of a class, outermost first (the class itself when it has none)."""
        r = self.find(c)
        parts = self.factors.get(r)
        if not parts:
            return [r]
        return [leaf for p in parts for leaf in self.leaves(p)]

    def split(self, c: int, sizes: list[int]) -> list[int]:
        """The classes of the parts when dimension `c` is reshaped into `sizes` (outermost first)."""
        r = self.find(c)
        if len(sizes) == 1:
            return [r]
        if r not in self.factors:
            self.factors[r] = tuple(self.new(s) for s in sizes)
            return list(self.factors[r])
        leaves = self.leaves(r)
        groups = align([self.size[leaf] for leaf in leaves], sizes)
        if groups is None:
            self.freeze(r, "reshaped in two different ways")
            return [self.new(s, "reshaped in two different ways") for s in sizes]
        out: list[int] = []
        for (i0, i1), (j0, j1) in groups:
            if i1 - i0 == 1:
                out += self.split(leaves[i0], sizes[j0:j1])
            elif j1 - j0 == 1:
                out.append(self.product(leaves[i0:i1]))
            else:
                self.freeze(r, "reshaped in two different ways")
                out += [self.new(s, "reshaped in two different ways") for s in sizes[j0:j1]]
        return out

    def product(self, classes: list[int]) -> int:
        """The class of a dimension made by merging dimensions of these classes (outermost first)."""
        if len(classes) == 1:
            return self.find(classes[0])
        c = self.new(math.prod(self.size[self.find(x)] for x in classes))
        self.factors[c] = tuple(self.find(x) for x in classes)
        return c

    def close(self) -> None:
        """Merge classes that are products of the same factors; freeze the factors of frozen products."""
        changed = True
        while changed:
            changed = False
            seen: dict[tuple[int, ...], int] = {}
            for root, parts in list(self.factors.items()):
                if self.find(root) != root:
                    continue
                key = tuple(self.find(p) for p in parts)
                other = seen.get(key)
                if other is not None and self.find(other) != root:
                    self.union(other, root)
                    changed = True
                else:
                    seen[key] = root
        changed = True
        while changed:  # removing part of a frozen product would change it
            changed = False
            for root, parts in list(self.factors.items()):
                if self.find(root) in self.frozen:
                    for p in parts:
                        if not self.is_frozen(p):
                            self.freeze(p, self.frozen[self.find(root)])
                            changed = True

    def locate(self, c: int, target: int) -> list[tuple[int, int]]:
        """Where class `target` sits inside dimension class `c`: (outer, inner) sizes per occurrence.

        Index i of a dimension of class `c` belongs to unit (i // inner) % size(target).
        """
        r, t = self.find(c), self.find(target)
        if r == t:
            return [(1, 1)]
        parts = self.factors.get(r)
        if not parts:
            return []
        found = []
        sizes = [self.size[self.find(p)] for p in parts]
        for k, p in enumerate(parts):
            before, after = math.prod(sizes[:k]), math.prod(sizes[k + 1 :])
            found += [(before * o, i * after) for o, i in self.locate(p, t)]
        return found

    def nodes(self, c: int) -> list[int]:
        """A class and every factor inside it, recursively."""
        r = self.find(c)
        return [r] + [n for p in self.factors.get(r, ()) for n in self.nodes(p)]


def align(a: list[int], b: list[int]) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Split two shapes into consecutive runs of equal product: [((i0, i1), (j0, j1)), ...].

    Sizes of 1 must already be removed. None when the products never meet (not a reshape).
    """
    groups = []
    i = j = 0
    while i < len(a) and j < len(b):
        i1, j1 = i + 1, j + 1
        pa, pb = a[i], b[j]
        while pa != pb:
            if pa < pb:
                if i1 == len(a):
                    return None
                pa *= a[i1]
                i1 += 1
            else:
                if j1 == len(b):
                    return None
                pb *= b[j1]
                j1 += 1
        groups.append(((i, i1), (j, j1)))
        i, j = i1, j1
    return groups if i == len(a) and j == len(b) else None
