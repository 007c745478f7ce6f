"""Every flagfile in experiments/ parses into a valid config; flag mapping."""

import glob
import os

import pytest
from absl import flags

from oat_tf import config as config_lib
from oat_tf import flags as oat_flags
from tests import testing

FLAGS = flags.FLAGS
if "epsilon" not in FLAGS:
    oat_flags.define_flags()

FLAGFILES = sorted(glob.glob(os.path.join(testing.REPO_ROOT, "experiments", "*.flags")))


def _parse(*argv):
    FLAGS.unparse_flags()
    FLAGS(["oat_tf.train", *argv])
    try:
        return oat_flags.flags_to_config(FLAGS)
    finally:
        FLAGS.unparse_flags()


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_gives_a_valid_config(path):
    config = _parse(f"--flagfile={path}")
    name = os.path.basename(path)[: -len(".flags")]
    assert config.name.startswith(name.split("_pgdat")[0])
    if "pgdat" in name:
        assert config.model.variant == "plain" and config.lambda_sampling.sampling == "fixed"
    elif name != "quickstart":
        assert config.train_attack.epsilon == pytest.approx(8 / 255)
        assert config.train_attack.num_steps == 7
        assert config.lambda_sampling.values == config_lib.S1


def test_paper_flagfiles_exist():
    names = {os.path.basename(p) for p in FLAGFILES}
    for setting in ("cifar10_resnet34", "svhn_wrn16_8", "stl10_wrn40_2"):
        assert f"{setting}_oat.flags" in names and f"{setting}_pgdat.flags" in names


def test_defaults_follow_the_paper():
    config = _parse()
    assert config.lambda_sampling.values == config_lib.S1
    assert config.model.encoder.scheme == "rand" and config.model.encoder.dim == 128
    assert config.train_attack.epsilon == pytest.approx(8 / 255)
    assert config.train_attack.step_size == pytest.approx(2 / 255)
    assert config.optimizer.momentum == 0.9 and config.optimizer.weight_decay == 5e-4
    assert config.evaluation.lambdas == config_lib.check_lambda_values("l", config_lib.S1 + config_lib.S3)
    assert [a.describe() for a in config.evaluation.attacks] == ["PGD-7", "PGD-20"]


def test_eval_attack_names():
    train = config_lib.AttackConfig(epsilon=0.3, step_size=0.01, num_steps=40)
    attacks = oat_flags.parse_eval_attacks(["train", "pgd20", "fgsm", "mi_fgsm"], train)
    assert attacks[0] == train
    assert (attacks[1].num_steps, attacks[1].epsilon, attacks[1].step_size) == (20, 0.3, 0.01)
    assert attacks[2].name == "fgsm" and attacks[2].epsilon == 0.3
    assert attacks[3].name == "mi_fgsm" and attacks[3].step_size == pytest.approx(0.03)
    apgd_ce, apgd_dlr, square = oat_flags.parse_eval_attacks(["apgd_ce", "apgd_dlr", "square500"], train)
    assert apgd_ce.describe() == "APGD-CE-100" and apgd_dlr.describe() == "APGD-DLR-100"
    assert square.describe() == "Square-500" and square.epsilon == 0.3
    custom = oat_flags.parse_eval_attacks(["pgd40:0.01"], train)[0]
    assert (custom.num_steps, custom.step_size, custom.epsilon) == (40, 0.01, 0.3)
    for bad in (["pgd0"], ["pgd10:x"], ["pgd10:-1"], ["cw"]):
        with pytest.raises(ValueError, match="eval_attacks"):
            oat_flags.parse_eval_attacks(bad, train)


def test_fractions_and_plain_defaults():
    config = _parse("--epsilon=16/255", "--variant=plain", "--lambda_sampling=fixed", "--lambda_values=0.3")
    assert config.train_attack.epsilon == pytest.approx(16 / 255)
    assert config.evaluation.lambdas == (0.3,)
    with pytest.raises(ValueError, match="epsilon"):
        oat_flags.parse_fraction("epsilon", "1/0")
