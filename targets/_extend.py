"""A measured profile extended to the layers it lacks: a per-kind model fitted on its own entries.

A measured profile is a table of the layers of the spaces it was profiled for. A spec with
another input size or space needs layers the table lacks, and only the device can measure them
(``hwsearch profile --bundle``). When the device is out of reach (``x86-epyc-1t`` is a host this
project no longer runs on), the table's own entries still say a lot about the device: how fast
its dense and depthwise kernels run, what a byte of activations costs, what an operator costs.
:func:`fit_extension` fits that, per layer kind and precision, as a non-negative linear model of a
layer's work::

    ms = c0 + c_dense * dense MACs + c_dw * depthwise MACs + c_small * small MACs
            + c_elems * activation values moved + c_params * parameters

(least squares on relative error). Its error is *measured, not assumed*: the entries of the
largest input size are held out, the model is fitted on the rest and predicts them, which is
the extrapolation a larger input asks for; that band is stored with the model and shown where
a latency from it is shown. The model prices a layer only when the table has no entry for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hwsearch.spaces._plan import _conv_out

if TYPE_CHECKING:  # _profile_format holds an Extension: imported from it at run time, not here
    from hwsearch.targets._profile_format import BlockKey, Entry

TERMS = ("ops", "dense", "depthwise", "small", "kelems", "kparams")


class ExtensionFit(BaseModel):
    """One group's model (a layer kind at a precision): coefficients of :data:`TERMS`, in ms."""

    model_config = ConfigDict(extra="forbid")

    coef: dict[str, float]
    fitted_on: int = Field(ge=1)


class Extension(BaseModel):
    """The model a measured profile prices its missing layers with, and its measured error."""

    model_config = ConfigDict(extra="forbid")

    groups: dict[str, ExtensionFit] = Field(description="'kind|precision' -> its fit")
    held_out: str = Field(description="what the error was measured on")
    within_25pct: float = Field(description="share of held-out layers with an anchor predicted within 25%")
    mape: float = Field(description="mean absolute relative error on the held-out layers with an anchor")
    band: float = Field(description="90th percentile of the relative error of held-out layers with an anchor "
                                    "(the same layer measured at another input size): the stated band")
    band_alone: float = Field(description="the same for held-out layers priced by the model alone (no anchor)")

    def price(self, key: BlockKey) -> float | None:
        """The modelled ms of a layer's key, or None where no group of its kind and precision was fitted."""
        fit = self.groups.get(f"{key.kind}|{key.precision}")
        if fit is None:
            return None
        t = key_terms(key)
        return max(sum(fit.coef.get(k, 0.0) * v for k, v in t.items()), 1e-6)

    def describe(self) -> str:
        return (f"layers it lacks are modelled from its entries: ±{self.band:.0%} from the same layer at another "
                f"input size, ±{self.band_alone:.0%} from the model alone (90% of {self.held_out})")


def key_terms(key: BlockKey) -> dict[str, float]:
    """A layer's work, from its profile key alone (see the module's formula)."""
    h, w, ho, wo = key.h, key.w, _conv_out(key.h, key.stride), _conv_out(key.w, key.stride)
    if key.kind == "stem":
        k2 = key.kernel**2
        return {"ops": 1.0, "dense": key.cin * key.cout * k2 * ho * wo / 1e6,
                "kelems": (key.cin * h * w + key.cout * ho * wo) / 1e3, "kparams": key.cin * key.cout * k2 / 1e3}
    if key.kind == "head":
        return {"ops": 1.0, "small": key.cin * key.cout / 1e6, "kelems": key.cin * h * w / 1e3,
                "kparams": key.cin * key.cout / 1e3}
    if key.kind == "fmb":  # dense kxk to the expanded channels, [squeeze-excite], 1x1 project
        return {"ops": 2.0 + 4 * bool(key.se) + key.residual,
                "dense": (key.cin * key.mid * key.kernel**2 + key.mid * key.cout) * ho * wo / 1e6,
                "small": 2 * key.mid * key.se / 1e6,
                "kelems": (key.cin * h * w + key.cout * ho * wo + 2 * key.mid * ho * wo) / 1e3,
                "kparams": (key.cin * key.mid * key.kernel**2 + key.mid * key.cout + 2 * key.mid * key.se) / 1e3}
    mid = key.mid or key.cin
    expand = key.cin * key.mid * h * w if key.mid else 0
    return {"ops": 1.0 + bool(key.mid) + 4 * bool(key.se) + key.residual,
            "dense": (expand + mid * key.cout * ho * wo) / 1e6,
            "depthwise": mid * key.kernel**2 * ho * wo / 1e6, "small": 2 * mid * key.se / 1e6,
            "kelems": (key.cin * h * w + key.cout * ho * wo + 2 * mid * (h * w + ho * wo)) / 1e3,
            "kparams": (key.cin * key.mid + mid * key.kernel**2 + mid * key.cout + 2 * mid * key.se) / 1e3}


def _fit(rows: list[tuple[BlockKey, float]]) -> ExtensionFit:
    from scipy.optimize import nnls

    x = np.array([[key_terms(k).get(t, 0.0) for t in TERMS] for k, _ in rows])
    y = np.array([ms for _, ms in rows])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale / y[:, None], np.ones(len(y)))  # relative error: each row divided by its time
    return ExtensionFit(coef={t: float(c / s) for t, c, s in zip(TERMS, coef, scale) if c > 0}, fitted_on=len(rows))


def _groups(entries: Mapping[str, Entry]) -> dict[str, list[tuple[BlockKey, float]]]:
    from hwsearch.targets._profile_format import BlockKey

    groups: dict[str, list[tuple[BlockKey, float]]] = defaultdict(list)
    for text, entry in entries.items():
        k = BlockKey.parse(text)
        if entry.mean_ms > 0:
            groups[f"{k.kind}|{k.precision}"].append((k, entry.mean_ms))
    return groups


def _config(key: BlockKey) -> BlockKey:
    return key._replace(h=0, w=0)


class Anchors:
    """A table's entries by layer configuration less its input size: where a missing layer's
    model starts from (the same layer measured at the nearest size)."""

    def __init__(self, rows: list[tuple[BlockKey, float]]) -> None:
        self._by: dict[BlockKey, list[tuple[BlockKey, float]]] = defaultdict(list)
        for k, ms in rows:
            self._by[_config(k)].append((k, ms))

    def nearest(self, key: BlockKey) -> tuple[BlockKey, float] | None:
        same = self._by.get(_config(key))
        if not same:
            return None
        size = key.h * key.w
        return min(same, key=lambda a: (abs(np.log(a[0].h * a[0].w / size)), a[0].h))


def extend_price(ext: Extension, key: BlockKey, anchors: Anchors) -> float | None:
    """A missing layer's modelled ms: the same layer measured at the nearest input size, scaled by
    the model's ratio between the two sizes; the model alone where no size of it was measured.
    None where the model has no group for its kind and precision."""
    alone = ext.price(key)
    if alone is None:
        return None
    anchor = anchors.nearest(key)
    if anchor is None:
        return alone
    k0, ms0 = anchor
    at_anchor = ext.price(k0)  # the same kind and precision: never None
    return alone if at_anchor is None else ms0 * alone / at_anchor


def fit_extension(entries: Mapping[str, Entry]) -> Extension:
    """Fit :class:`Extension` on a profile's entries and measure its error on the entries of the
    largest input size of each group of blocks (most layers are blocks), held out of a fit on the
    rest and priced as a missing layer is (:func:`extend_price`). Raises ValueError when there is
    nothing to fit."""
    groups = _groups(entries)
    if not groups:
        raise ValueError("a profile without entries cannot be extended: measure some layers first")
    errors: dict[bool, list[float]] = {True: [], False: []}  # anchored or not -> relative errors
    held = []
    for name, rows in groups.items():
        if not name.startswith(("ir|", "fmb|")):
            continue
        top = max(k.h * k.w for k, _ in rows)
        train = [r for r in rows if r[0].h * r[0].w < top]
        test = [r for r in rows if r[0].h * r[0].w == top]
        if len(train) < 2 * len(TERMS) or not test:
            continue
        ext = Extension(groups={name: _fit(train)}, held_out="", within_25pct=0, mape=0, band=0, band_alone=0)
        anchors = Anchors(train)
        for k, ms in test:
            errors[anchors.nearest(k) is not None].append(abs(extend_price(ext, k, anchors) / ms - 1))  # type: ignore[operator]
        side = int(top**0.5)
        held.append(f"{len(test)} {name.split('|')[1]} blocks at {side}x{side}")
    if not errors[True]:
        raise ValueError("too few layers measured at more than one input size to measure the extension's error")
    err, alone = np.array(errors[True]), np.array(errors[False] or errors[True])
    return Extension(groups={name: _fit(rows) for name, rows in groups.items()},
                     held_out=", ".join(held) + " held out of a fit on the smaller sizes",
                     within_25pct=float(np.mean(err <= 0.25)), mape=float(err.mean()),
                     band=float(np.quantile(err, 0.9)), band_alone=float(np.quantile(alone, 0.9)))
