"""One layer's decision, the type shared by plans, baselines, the search space and warm start."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KEEP_DENSE", "LayerChoice"]

KEEP_DENSE = "none"  # the method name that keeps a layer dense


@dataclass(frozen=True)
class LayerChoice:
    """``method`` (a registered method name, or ``"none"`` to keep the layer dense) and its ``ranks``.

    ``fraction`` is the rank fraction a search sampled the ranks from; ``None`` when the ranks were
    chosen otherwise (a rule, a baseline, a hand-written plan).
    """

    method: str
    ranks: tuple[int, ...] = ()
    fraction: float | None = None

    @property
    def keeps_dense(self) -> bool:
        return self.method == KEEP_DENSE

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"method": self.method, "ranks": list(self.ranks)}
        if self.fraction is not None:
            out["fraction"] = round(self.fraction, 6)
        return out
