"""Every layer kind of the plan has a rule in every per-kind dispatch of the targets: a kind added
to ``hwsearch.spaces._plan.Layer`` fails here, not in the middle of a search, until it has one."""

import pytest

from hwsearch.spaces._plan import LAYER_KINDS
from hwsearch.targets._cost import layer_peak_bits
from hwsearch.targets._onnx_graph import _kind_int8_io, emit_layer
from hwsearch.targets._profile_format import KINDS, block_key
from hwsearch.targets._roofline import layer_work

DISPATCHES = [block_key, layer_peak_bits, layer_work, emit_layer, _kind_int8_io]


@pytest.mark.parametrize("kind", LAYER_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("dispatch", DISPATCHES, ids=lambda d: d.__name__)
def test_every_layer_kind_has_a_rule_in_every_dispatch(dispatch, kind):
    assert kind in dispatch.registry


def test_profile_features_cover_every_layer_kind():
    assert KINDS == tuple(k.kind for k in LAYER_KINDS) == ("stem", "ir", "fmb", "head")


@pytest.mark.parametrize("dispatch", DISPATCHES, ids=lambda d: d.__name__)
def test_a_layer_of_no_known_kind_is_refused_by_name(dispatch):
    class OddPlan:
        pass

    rest = (None, None, None) if dispatch is emit_layer else ()  # the graph, input and weights
    with pytest.raises(TypeError, match="OddPlan.*register"):
        dispatch(OddPlan(), *rest)
