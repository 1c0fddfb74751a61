import optuna
import pytest
from optuna.trial import FixedTrial

from hwsearch.spaces import Candidate, SpaceSpec, Stage, extremes, params_of, space
from tests.conftest import TINY_SPACE


def random_candidates(n: int, config: SpaceSpec, seed: int = 0) -> list[Candidate]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space(study.ask(), config) for _ in range(n)]


@pytest.mark.parametrize("config", [SpaceSpec(), SpaceSpec(bits_per_stage=True, weight_bits=[2, 4, 8, 16, 32],
                                                             activation_bits=[2, 4, 8, 16, 32])])
def test_string_round_trip_for_many_random_candidates(config):
    cands = random_candidates(500, config)
    assert len({c.to_string() for c in cands}) > 450  # really different candidates
    for c in cands:
        back = Candidate.from_string(c.to_string())
        assert back == c
        assert back.to_string() == c.to_string()


def test_string_form_reads_like_timm_block_strings():
    c = Candidate(stem=16, stages=(Stage(2, 3, 4, 24, se=True, act="hswish", prune=0.25, w_bits=8, a_bits=8),
                                   Stage(1, 5, 6, 32, w_bits=4, a_bits=8)), temperature=4.0, alpha=0.5)
    assert c.to_string() == "c16:ir_r2_k3_e4_c24_se_hs_p0.25_w8a8:ir_r1_k5_e6_c32_re_w4a8:kd_t4.0_a0.5"
    assert "squeeze-excite" in c.describe() and "25% of expanded channels pruned" in c.describe()


@pytest.mark.parametrize("bad, message", [
    ("x16:ir_r1_k3_e1_c8_re_w8a8", "stem width"),
    ("c16:ir_r1_k4_e1_c8_re_w8a8", "kernel"),
    ("c16:ir_r1_k3_e1_c8_re_w7a8", "w_bits"),
    ("c16:ir_r1_k3_e1_c8_re_zz_w8a8", "unknown token"),
    ("c16:ir_r1_k3_e1_c8_re_p0.5_w8a8", "expand 1"),
    ("c16:ir_k3_e1_c8_re_w8a8", "lacks"),
])
def test_bad_strings_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        Candidate.from_string(bad)


def test_no_distillation_normalises_temperature():
    assert Candidate(8, (Stage(1, 3, 1, 8),), temperature=5.0, alpha=0.0).temperature == 1.0


def test_space_asks_only_parameters_that_matter():
    config = SpaceSpec(**TINY_SPACE)
    # stage 0 without expansion: no pruning ratio is asked (FixedTrial raises on unknown params)
    params = {"s0_expand": 1, "s0_width": 8, "s0_se": False,
              "s1_expand": 3, "s1_prune": 0.5, "s1_depth": 2, "s1_se": True,
              "w_bits": 8, "a_bits": 32, "kd_temperature": 2.0, "kd_alpha": 0.5}
    trial = FixedTrial(params)
    cand = space(trial, config)
    assert cand.stages[0].prune == 0.0 and cand.stages[1].prune == 0.5
    assert cand.stages[1].w_bits == 8 and cand.stages[0].a_bits == 32
    assert set(trial.params) == set(params)  # single choices (stem, kernel, act, s0 depth, s1 width) not asked
    no_kd = SpaceSpec(**{**TINY_SPACE, "distill": False})
    trial = FixedTrial({k: v for k, v in params.items() if not k.startswith("kd_")})
    assert not space(trial, no_kd).distils


def test_extremes_are_the_smallest_architecture_at_every_bit_choice():
    config = SpaceSpec(**TINY_SPACE)
    ext = extremes(config)
    assert len(ext) == len(config.weight_bits) * len(config.activation_bits)
    for c in ext:
        assert c.stem == 8 and all(s.depth == 1 and s.expand == 1 for s in c.stages)
        assert [s.width for s in c.stages] == [8, 16]


def test_space_size_counts_conditional_pruning():
    config = SpaceSpec(**TINY_SPACE)
    # per stage: kernel 1 x se 2 x act 1 x (expand 1: 1 + expand 3: 2 prune ratios) = 6
    # stage 0: widths 2 x depths 1 x 6; stage 1: widths 1 x depths 2 x 6; bits 2x2; stem 1
    assert config.size() == (2 * 6) * (2 * 6) * 4


@pytest.mark.parametrize("config", [SpaceSpec(), SpaceSpec(bits_per_stage=True), SpaceSpec(**TINY_SPACE)])
def test_params_of_inverts_the_space(config):
    for cand in random_candidates(100, config, seed=5) + extremes(config):
        params = params_of(cand, config)
        again = space(FixedTrial(params), config)
        assert again.stages == cand.stages and again.stem == cand.stem
        if cand.distils:
            assert (again.temperature, again.alpha) == (cand.temperature, cand.alpha)
    with pytest.raises(ValueError, match="stem=999"):
        params_of(cand.replace(stem=999), config)
