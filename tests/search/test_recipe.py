"""The training recipe (hwsearch.search.training._recipe): augmentation, optimiser, schedule."""

import numpy as np
import pytest
import torch

from hwsearch.search.spec import parse_spec
from hwsearch.search.training import Recipe, TrainSettings, augment, evaluate, load_dataset, train_settings
from hwsearch.search.training._recipe import optimizer_for, schedule_for
from hwsearch.spaces import Candidate, build_plan, network
from tests.conftest import tiny_spec

FULL = Recipe(crop_padding=2, flip=True, cutout=3)


def batch(n=16, c=3, side=8) -> torch.Tensor:
    return torch.arange(n * c * side * side, dtype=torch.float32).reshape(n, c, side, side) + 1.0


def test_augmentation_is_seeded_and_deterministic():
    x = batch()
    a, b = (augment(x, FULL, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, augment(x, FULL, torch.Generator().manual_seed(6)))
    assert augment(x, Recipe(), torch.Generator()) is x  # nothing asked, nothing drawn


def test_each_augmented_image_is_a_window_of_the_padded_image_maybe_mirrored():
    x = batch(n=32)
    out = augment(x, Recipe(crop_padding=2, flip=True), torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored, i
        flips += mirrored and not plain
    assert 4 <= flips <= 28  # about half of 32


def test_cutout_sets_one_square_per_image_to_the_mean():
    x = batch(n=8, side=16)  # every pixel is > 0, so only the cut-out ones are 0
    out = augment(x, Recipe(cutout=4), torch.Generator().manual_seed(1))
    holes = out[:, 0] == 0
    assert torch.equal(holes, (out == 0).all(1))  # across every channel
    sizes = holes.flatten(1).sum(1)
    assert (sizes >= 4).all() and (sizes <= 16).all() and (sizes == 16).any()  # clipped at the borders


def test_no_weight_decay_on_batch_norm_or_biases_and_the_cosine_schedule_warms_up_then_decays():
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c8_re_w32a32"), (1, 8, 8), 10)
    net = network.build(plan)
    recipe = Recipe(optimizer="sgd", schedule="cosine", warmup=0.1, weight_decay=5e-4)
    opt = optimizer_for(net, recipe, lr=0.1)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(net.parameters()))
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    sched = schedule_for(opt, recipe, lr=0.1, steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and max(lrs) == pytest.approx(0.1) and np.argmax(lrs) == 9
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.001
    with pytest.raises(ValueError, match="optimizer must be"):
        Recipe(optimizer="lamb")


def test_the_spec_resolves_the_recipe_for_its_data_and_its_length():
    digits = parse_spec(tiny_spec())
    # a short training (the search's fidelity) is not regularised; a long one is, without mirror images for digits
    assert train_settings(digits, 8).recipe == Recipe(crop_padding=0, flip=False, channels_last=True)
    assert train_settings(digits, 8, epochs=12).recipe == Recipe(crop_padding=1, flip=False, label_smoothing=0.1,
                                                                   channels_last=True)
    photos = parse_spec(tiny_spec(dataset={"name": "npz", "path": "/x.npz"},
                                  training={"optimizer": "sgd", "cutout": 8}))
    r = train_settings(photos, 32, epochs=30).recipe
    assert (r.crop_padding, r.flip, r.label_smoothing, r.optimizer, r.cutout) == (4, True, 0.1, "sgd", 8)
    assert train_settings(photos, 32, epochs=30).epochs == 30
    short = train_settings(photos, 32, epochs=11).recipe  # only what the spec asked for: cutout
    assert (short.crop_padding, short.flip, short.label_smoothing, short.cutout) == (0, False, 0.0, 8)
    chosen = parse_spec(tiny_spec(training={"crop_padding": 2, "label_smoothing": 0.0}))
    assert train_settings(chosen, 8).recipe.crop_padding == 2 and train_settings(chosen, 8, epochs=40).recipe == \
        Recipe(crop_padding=2, label_smoothing=0.0, channels_last=True)
    off = parse_spec(tiny_spec(training={"crop_padding": 0, "flip": True, "channels_last": False}))
    assert not train_settings(off, 8).recipe.crop_padding and train_settings(off, 8).recipe.flip


def test_training_with_the_whole_recipe_is_deterministic_given_the_seed():
    data = load_dataset(parse_spec(tiny_spec()).dataset, 0)
    cand = Candidate.from_string("c8:ir_r1_k3_e3_c8_re_se_p0.5_w8a8:ir_r1_k3_e1_c16_re_w4a8")
    recipe = Recipe(optimizer="sgd", schedule="cosine", label_smoothing=0.1, crop_padding=1, flip=True,
                    cutout=2, channels_last=True)
    settings = TrainSettings(epochs=2, finetune_epochs=1, lr=0.05, recipe=recipe)
    a, b = (evaluate(cand, data, None, settings, seed=3, keep_weights=True) for _ in range(2))
    assert a.accuracy == b.accuracy and a.curve == b.curve
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert all(v.is_contiguous() for v in a.state_dict.values())  # saved as exported: plain layout


def test_training_keeps_freed_memory_for_the_next_step():
    """glibc is told to serve a step's buffers from its heap and keep them when freed, instead of
    mapping fresh pages every step (``_allocator``): a 64 MiB buffer, above glibc's default ceiling
    for its mmap threshold (32 MiB), comes from the heap."""
    import ctypes

    from hwsearch.search.training import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc, or the allocator's settings were chosen by the environment")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                         "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    mapped = libc.mallinfo2().hblkhd
    buffer = ctypes.create_string_buffer(64 << 20)  # plain malloc
    assert libc.mallinfo2().hblkhd == mapped  # no new mapping: served from the heap
    assert keep_freed_memory()  # idempotent
    del buffer
