"""Every shipped target prices every spec: any class count, any input size (issue 18).

Estimated targets price any layer from their roofline; the measured ``x86-epyc-1t`` from its table,
its heads of other class counts from its measured heads, and the layers its table lacks from its
extension (a model fitted on its entries, with a measured band)."""

import itertools
import json
import math
import subprocess

import pytest
import yaml

from hwsearch.spaces import SpaceSpec
from hwsearch.spaces._plan import HeadPlan, StemPlan, reachable_layers
from hwsearch.targets import Profile, UnpriceableError, fit_extension, get_target, target_names
from hwsearch.targets._estimate import DEVICES, estimate_profile
from hwsearch.targets._profile_format import Entry, block_key
from hwsearch.targets._profile_targets import ProfileTarget
from hwsearch.targets._profiling import sample_plans
from hwsearch.targets._registry import SHIPPED
from tests.conftest import hwsearch_cmd

CLASSES = (2, 3, 10, 100)
INPUTS = ((1, 8, 8), (3, 32, 32), (3, 96, 96))
SHIPPED_TARGETS = [n for n in target_names() if n != "local-cpu"]  # local-cpu measures what it lacks


@pytest.mark.parametrize(("classes", "shape"), list(itertools.product(CLASSES, INPUTS)))
def test_every_shipped_target_prices_the_default_space_at_any_class_count_and_input(classes, shape):
    layers = reachable_layers(SpaceSpec(), shape, classes)
    # every stem and head, and an even sample of the blocks (all of them: 20,934 layers a cell)
    chosen = [lay for lay in layers if isinstance(lay, StemPlan | HeadPlan)] + layers[::97]
    plans = sample_plans(SpaceSpec(), shape, classes, n=6, seed=classes, spread=True)
    for name in SHIPPED_TARGETS:
        t = get_target(name)
        for layer in chosen:
            lat = t.layer_latency(layer)
            assert lat.mean_ms > 0 and math.isfinite(lat.mean_ms), (name, block_key(layer))
        for plan in plans:
            cost = t.price(plan)
            assert cost.latency_ms > 0 and math.isfinite(cost.latency_ms), (name, plan.candidate.to_string())


def _head(classes: int, cin: int = 64, bits: int = 8) -> HeadPlan:
    return HeadPlan(cin=cin, num_classes=classes, hw_in=(4, 4), w_bits=bits, a_bits=bits)


def test_a_head_of_another_class_count_starts_from_the_measured_one_and_states_its_error():
    p = Profile.load(SHIPPED / "x86-epyc-1t.json")
    ten = p.lookup(_head(10))
    assert str(block_key(_head(10))) in p.entries and ten.std_ms == p.entries[str(block_key(_head(10)))].std_ms
    rate, fitted = p.head_ns_per_mac("int8")
    assert not fitted  # the EPYC table measured heads at 10 classes only: the default rate
    three, hundred = p.lookup(_head(3)), p.lookup(_head(100))
    assert three.mean_ms < ten.mean_ms < hundred.mean_ms
    assert hundred.mean_ms == pytest.approx(ten.mean_ms + rate * 64 * 90 / 1e6)
    assert hundred.std_ms >= hundred.mean_ms - ten.mean_ms  # the modelled part is its stated error
    # where a table holds two class counts of a head, the rate is fitted on them
    p.add(block_key(_head(100)), Entry(mean_ms=ten.mean_ms + 0.004, std_ms=0.0, count=5))
    rate, fitted = p.head_ns_per_mac("int8")
    assert fitted and rate == pytest.approx(0.004 * 1e6 / (64 * 90))
    assert p.lookup(_head(55)).mean_ms == pytest.approx(ten.mean_ms + 0.004 * 45 / 90)
    # a head of a map or width never measured is not made up from nothing (without an extension)
    bare = Profile(device=p.device, bits=p.bits, overhead_ms=p.overhead_ms, entries=p.entries)
    with pytest.raises(UnpriceableError, match="no head on a 4x4 map of 40 channels"):
        bare.lookup(_head(3, cin=40))


def test_the_extension_is_what_its_entries_give_and_prices_a_larger_input_with_its_band():
    p = Profile.load(SHIPPED / "x86-epyc-1t.json")
    assert p.extension is not None and p.device.measured
    assert fit_extension(p.entries).model_dump() == p.extension.model_dump()  # `hwsearch extend` made the file
    assert 0 < p.extension.band < p.extension.band_alone and p.extension.within_25pct > 0.7
    stem, *blocks = [lay for lay in reachable_layers(SpaceSpec(), (3, 96, 96), 10)[::997]]
    for layer in (stem, *blocks):
        assert str(block_key(layer)) not in p.entries
        lat = p.lookup(layer)
        assert lat.std_ms == pytest.approx(lat.mean_ms * p.extension.band) or lat.std_ms == pytest.approx(
            lat.mean_ms * p.extension.band_alone)
    # the same table without its extension refuses, naming the layer
    bare = Profile(device=p.device, bits=p.bits, overhead_ms=p.overhead_ms, entries=p.entries)
    with pytest.raises(UnpriceableError, match=r"no latency for layer .*stem\|96x96"):
        bare.lookup(stem)


def test_an_extension_predicts_a_held_out_input_size_of_a_real_table():
    """Fitted on the EPYC table's blocks below 16x16, the extension prices its 16x16 blocks (the
    same layers measured at 8x8 and 32x32 are left out of the anchors too: a size never seen)."""
    p = Profile.load(SHIPPED / "x86-epyc-1t.json")
    keep = {k: e for k, e in p.entries.items() if "|16x16|" not in k and "|32x32|" not in k}
    held = {k: e for k, e in p.entries.items() if k.startswith("ir|16x16|")}
    ext = Profile(device=p.device, bits=p.bits, overhead_ms=p.overhead_ms, entries=keep,
                  extension=fit_extension(keep))
    from hwsearch.targets._profile_format import BlockKey

    errors = sorted(abs(ext.lookup(_layer_of(BlockKey.parse(k))).mean_ms / e.mean_ms - 1) for k, e in held.items())
    assert errors[len(errors) // 2] < 0.25  # the median held-out layer within 25%


def _layer_of(key):
    """A plan layer with this profile key (int8: 8 bits, else 32)."""
    from hwsearch.spaces._plan import BlockPlan
    from hwsearch.spaces._plan import _conv_out as out

    bits = 8 if key.precision == "int8" else 32
    return BlockPlan(name="b", stage=0, index=0, cin=key.cin, cmid=key.mid or key.cin, cmid_dense=key.mid or key.cin,
                     cout=key.cout, kernel=key.kernel, stride=key.stride, se=key.se, act=key.act,
                     hw_in=(key.h, key.w), hw_out=(out(key.h, key.stride), out(key.w, key.stride)), w_bits=bits,
                     a_bits=bits)


def test_an_estimate_prices_any_input_adapter():
    for dev in DEVICES:
        t = ProfileTarget(estimate_profile(dev))
        small, large = t.adapter_latency((1, 8, 8), "uint8"), t.adapter_latency((3, 96, 96), "uint8")
        assert 0 < small.mean_ms < large.mean_ms


def test_the_extend_command_writes_a_measured_profile_and_refuses_an_estimate(tmp_path):
    src = json.loads((SHIPPED / "x86-epyc-1t.json").read_text())
    src["extension"] = None
    (tmp_path / "epyc.json").write_text(json.dumps(src))
    r = subprocess.run([*hwsearch_cmd(), "extend", str(tmp_path / "epyc.json"), "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "modelled from its entries" in r.stdout and Profile.load(tmp_path / "x.json").extension is not None
    bad = subprocess.run([*hwsearch_cmd(), "extend", str(SHIPPED / "rpi4-a72.json")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "is an estimate" in bad.stderr


def test_a_measured_profile_of_another_device_names_what_fills_a_missing_layer(tmp_path):
    p = Profile.load(SHIPPED / "x86-epyc-1t.json")
    Profile(device=p.device, bits=p.bits, overhead_ms=p.overhead_ms, entries=p.entries).save(tmp_path / "epyc.json")
    stem = reachable_layers(SpaceSpec(), (3, 96, 96), 10)[0]
    with pytest.raises(UnpriceableError, match=r"measured on AMD EPYC.*'hwsearch extend .*epyc\.json'") as e:
        ProfileTarget.load(tmp_path / "epyc.json").layer_latency(stem)
    assert "'hwsearch profile'" not in str(e.value)  # that measures this host, not the EPYC
    assert "'hwsearch profile --bundle x86-epyc-1t-bundle --spec SPEC --threads 1" in str(e.value)
    # a command given a spec names it in the advice
    spec = tmp_path / "pets.yaml"
    spec.write_text(yaml.safe_dump({"name": "pets", "dataset": {"name": "digits", "limit": 100},
                                    "target": str(tmp_path / "epyc.json")}))
    r = subprocess.run([*hwsearch_cmd(), "validate", str(spec)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"--bundle x86-epyc-1t-bundle --spec {spec} " in r.stderr, r.stderr


def test_each_estimate_carries_its_check_against_published_measurements():
    from hwsearch.targets._published import (
        mobilenet_v1,
        mobilenet_v2,
        network_ms,
        resnet8,
        resnet18,
        resnet34,
        resnet50,
    )

    # the networks are the published ones: their multiply-adds are the papers' (millions)
    macs = {f.__name__: sum(lay.macs for lay in f(1.0, 224, 1000, "fp32")) / 1e6
            for f in (mobilenet_v1, mobilenet_v2, resnet18, resnet34, resnet50)}
    assert round(macs["mobilenet_v1"]) == 569 and round(macs["mobilenet_v2"]) == 301
    assert [round(macs[f"resnet{n}"], -1) for n in (18, 34, 50)] == [1810, 3660, 4090]
    # a published fp16 run is priced at the fp16 peak where the device has one, else as fp32
    jetson, pi = ({d.name: d for d in DEVICES}[n] for n in ("jetson-orin-nano", "rpi4-a72"))
    for dev, faster in ((jetson, True), (pi, False)):
        r18 = resnet18(1.0, 224, 3, "fp16")
        fp16, fp32 = (network_ms(r18, dev.figures, dev.inference_overhead_us, p) for p in ("fp16", None))
        assert (fp16 < fp32 / 2) if faster else fp16 <= fp32
    assert round(sum(lay.macs for lay in resnet8(1.0, 32, 10, "int8")) / 1e6, 1) == 12.5
    assert round(sum(lay.macs for lay in mobilenet_v1(0.25, 96, 2, "int8")) / 1e6, 1) == 7.5
    for dev in DEVICES:
        v = Profile.load(SHIPPED / f"{dev.name}.json").validation
        assert v is not None and len(v.rows) >= 3
        for row in v.rows:
            assert row.source.startswith("https://") and row.quote and row.adjustment
            assert row.ratio == pytest.approx(row.predicted_ms / row.compared_ms)
        assert v.low <= v.median <= v.high
    r = subprocess.run([*hwsearch_cmd(), "targets"], capture_output=True, text=True, timeout=120)
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    for dev in DEVICES:
        assert "published measurements (median x" in lines[dev.name]
