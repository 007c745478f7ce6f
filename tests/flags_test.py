"""Every flagfile in experiments/ parses into a valid config; flag mapping."""

import dataclasses
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

# Training flagfiles; `study_*.flags` are `python -m oat_tf.sweep` flagfiles
# (checked by the sweep's tests).
FLAGFILES = sorted(
    path for path in glob.glob(os.path.join(testing.REPO_ROOT, "experiments", "*.flags"))
    if not os.path.basename(path).startswith("study_")
)


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
    if "pgdats" in name:
        assert config.model.variant == "ats" and config.lambda_sampling.sampling == "fixed"
        assert config.evaluation.lambdas == config.lambda_sampling.values
    elif "pgdat" in name:
        assert config.model.variant == "plain" and config.lambda_sampling.sampling == "fixed"
    if name.endswith("oats") or "pgdats" in name:
        assert config.model.slimmable and config.model.widths == (0.5, 0.75, 1.0)
    else:
        assert not config.model.slimmable
    if "_mixbn_" in name:  # the issue 6 study: mixed-batch objective, ε = 0.1
        assert config.train.objective == "mixed_batch"
        assert config.model.variant == ("mixture_bn" if "mixture" in name else "plain")
        assert config.train.clean_fraction == (0.0 if "_f000" in name else 0.5)
        assert config.train_attack.epsilon == pytest.approx(0.1)
        assert config.data.dataset == "npz:../shared/data/fashion_mnist.npz"
    elif name.startswith("rdi_"):  # issue 5: RDI-Nets, SPEC §3 settings
        assert config_lib.is_multi_exit_architecture(config.model.architecture)
        assert config.model.variant == "plain" and config.lambda_sampling.sampling == "fixed"
        backbone = name.endswith("_backbone")
        assert config.multi_exit.defence == ("main" if backbone else "max_average")
        assert config.multi_exit.threshold_target == ("none" if backbone else "equal_usage")
        if backbone:
            assert config.multi_exit.exit_weights[-1] == 1.0 and sum(config.multi_exit.exit_weights) == 1.0
        if "_mnist_" in name:
            assert config.train_attack.epsilon == pytest.approx(0.3)
            assert config.data.dataset == "npz:../shared/data/mnist.npz"
            assert config.evaluation.attacks[0].num_steps == 40
            assert config.evaluation.attacks[0].step_size == pytest.approx(0.01)
            assert config.train_attack.num_steps == (40 if "_pgd40_" in name else 10)
        else:
            assert config.train_attack.epsilon == pytest.approx(8 / 255)
            assert config.train_attack.num_steps == 10
            assert config.evaluation.attacks[0].num_steps == 20
    elif not name.startswith("quickstart") and "pgdat" not in name:
        assert config.train_attack.epsilon == pytest.approx(8 / 255)
        assert config.train_attack.num_steps == 7
        assert config.lambda_sampling.values == config_lib.S1


def test_paper_flagfiles_exist():
    names = {os.path.basename(p) for p in FLAGFILES}
    for setting in ("cifar10_resnet34", "svhn_wrn16_8", "stl10_wrn40_2"):
        assert f"{setting}_oat.flags" in names and f"{setting}_pgdat.flags" in names
    assert {"cifar10_resnet34_oats.flags", "cifar10_resnet34_pgdats.flags", "quickstart_oats.flags"} <= names
    for setting in ("mnist_smallcnn", "mnist_smallcnn_pgd40", "cifar10_resnet38", "cifar10_mobilenet_v2"):
        assert {f"rdi_{setting}_maxavg.flags", f"rdi_{setting}_backbone.flags"} <= names


def test_widths_flag():
    config = _parse("--variant=oats", "--widths=1,1/2")
    assert config.model.widths == (0.5, 1.0) and config.model.slimmable
    assert _parse().model.widths == (0.5, 0.75, 1.0)
    for bad in ("0.5,0.75", "0,1", "0.5,0.5,1", "1.5,1"):
        with pytest.raises(flags.IllegalFlagValueError, match="widths"):
            _parse(f"--widths={bad}")
    with pytest.raises(flags.IllegalFlagValueError, match="architecture=small_cnn or resnet"):
        _parse("--variant=oats", "--architecture=wrn16_8")
    ats = _parse("--variant=ats", "--architecture=resnet18", "--lambda_sampling=fixed", "--lambda_values=1")
    assert ats.evaluation.lambdas == (1.0,)


def test_model_config_checks_widths():
    assert config_lib.ModelConfig(widths=[1, 0.25]).widths == (0.25, 1.0)
    with pytest.raises(ValueError, match="`widths` must contain 1.0.*Received: widths="):
        config_lib.ModelConfig(widths=(0.5,))
    with pytest.raises(ValueError, match="`widths` must be distinct"):
        config_lib.ModelConfig(widths=(0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        config_lib.ModelConfig(widths=(0.0, 1.0))


def test_defaults_follow_the_paper():
    config = _parse()
    assert config.lambda_sampling.values == config_lib.S1
    assert config.model.encoder.scheme == "rand" and config.model.encoder.dim == 128
    assert config.train_attack.epsilon == pytest.approx(8 / 255)
    assert config.train_attack.step_size == pytest.approx(2 / 255)
    assert config.optimizer.momentum == 0.9 and config.optimizer.weight_decay == 5e-4
    assert config.evaluation.lambdas == config_lib.check_lambda_values("l", config_lib.S1 + config_lib.S3)
    # RA is the worst case over the training attack and AutoAttack-fast.
    assert [a.describe() for a in config.evaluation.attacks] == [
        "PGD-7", "AutoAttack-fast: APGD-CE-100", "AutoAttack-fast: APGD-T-100/3"]


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
    apgd_t, fab_t = oat_flags.parse_eval_attacks(["apgd_t", "fab_t"], train)
    assert apgd_t.describe() == "APGD-T-100/9" and fab_t.describe() == "FAB-T-100/9"
    assert apgd_t.epsilon == fab_t.epsilon == 0.3 and not apgd_t.ensemble
    # The presets expand to their members, at the training ε; listing one
    # twice (or a member again) adds nothing.
    standard = oat_flags.parse_eval_attacks(["train", "autoattack", "autoattack"], train)
    assert [a.describe() for a in standard] == [
        "PGD-40", "AutoAttack: APGD-CE-100", "AutoAttack: APGD-T-100/9",
        "AutoAttack: FAB-T-100/9", "AutoAttack: Square-5000"]
    assert all(a.epsilon == 0.3 for a in standard)
    assert standard[-1].num_queries == 5000 and standard[-1].p_init == 0.8
    fast = oat_flags.parse_eval_attacks(["autoattack_fast"], train)
    assert [(a.name, a.num_target_classes, a.ensemble) for a in fast] == [
        ("apgd_ce", 9, "AutoAttack-fast"), ("apgd_t", 3, "AutoAttack-fast")]
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


def test_mixed_batch_flags():
    config = _parse("--variant=mixture_bn", "--objective=mixed_batch", "--clean_fraction=0.25")
    assert config.model.variant == "mixture_bn"
    assert config.train.objective == "mixed_batch" and config.train.clean_fraction == 0.25
    assert config.evaluation.test_bn == "adversarial" and config.evaluation.lambdas == (1.0,)
    clean_bn = _parse("--variant=mixture_bn", "--objective=mixed_batch", "--test_bn=clean")
    assert clean_bn.evaluation.lambdas == (0.0,) and clean_bn.evaluation.test_bn == "clean"
    both = _parse("--variant=mixture_bn", "--objective=mixed_batch", "--eval_lambdas=0,1")
    assert both.evaluation.lambdas == (0.0, 1.0)
    madry = _parse("--variant=plain", "--objective=mixed_batch", "--clean_fraction=0")
    assert madry.train.clean_fraction == 0.0 and madry.evaluation.lambdas == (1.0,)
    default = _parse()
    assert default.train.objective == "oat" and default.train.clean_fraction == 0.5
    with pytest.raises(flags.IllegalFlagValueError, match="clean_fraction"):
        _parse("--objective=mixed_batch", "--variant=plain", "--clean_fraction=1.5")
    with pytest.raises(flags.IllegalFlagValueError, match="mixture_bn needs --objective=mixed_batch"):
        _parse("--variant=mixture_bn")
    with pytest.raises(flags.IllegalFlagValueError, match="mixed_batch needs --variant=plain"):
        _parse("--objective=mixed_batch", "--variant=oat")


def test_mixed_batch_config_fields_are_checked():
    with pytest.raises(ValueError, match="`objective` must be one of.*Received: objective='madry'"):
        config_lib.TrainConfig(objective="madry")
    with pytest.raises(ValueError, match="`clean_fraction` must be.*Received: clean_fraction=-0.1"):
        config_lib.TrainConfig(clean_fraction=-0.1)
    with pytest.raises(ValueError, match="`test_bn` must be one of.*Received: test_bn='both'"):
        config_lib.EvalConfig(test_bn="both")
    with pytest.raises(ValueError, match="'mixture_bn' needs `objective` 'mixed_batch'.*Received: objective='oat'"):
        config_lib.ExperimentConfig(model=config_lib.ModelConfig(variant="mixture_bn"))
    with pytest.raises(ValueError, match="Received: objective='mixed_batch', variant='oats'"):
        config_lib.ExperimentConfig(train=config_lib.TrainConfig(objective="mixed_batch"),
                                    model=config_lib.ModelConfig(variant="oats"))


def test_mixed_batch_config_round_trips_through_json():
    import dataclasses
    import json

    config = _parse("--variant=mixture_bn", "--objective=mixed_batch", "--clean_fraction=0.3", "--test_bn=clean")
    payload = json.loads(json.dumps(config_lib.to_dict(config)))
    train = config_lib.TrainConfig(**payload["train"])
    evaluation = dataclasses.replace(config.evaluation, test_bn=payload["evaluation"]["test_bn"])
    assert train == config.train and evaluation == config.evaluation


def test_size_flags():
    config = _parse("--filters=4,8", "--hidden_units=16")
    assert config.model.filters == (4, 8) and config.model.hidden_units == 16
    resnet = _parse("--architecture=resnet18", "--filters=4,4,8,8")
    assert resnet.model.filters == (4, 4, 8, 8) and resnet.model.hidden_units == 0
    default = _parse()
    assert default.model.filters == () and default.model.hidden_units == 0
    for argv in (
        ("--architecture=resnet18", "--filters=4,4,4"),
        ("--architecture=wrn16_8", "--filters=4,8"),
        ("--architecture=rdi_small_cnn", "--filters=4,8"),
        ("--architecture=resnet18", "--hidden_units=8"),
        ("--filters=4,x",),
    ):
        with pytest.raises(flags.IllegalFlagValueError, match="--filters takes two positive ints"):
            _parse(*argv)


def test_bn_statistics_flags():
    default = _parse()
    assert default.evaluation.bn_statistics == "moving" and default.export_bn_statistics == "moving"
    config = _parse("--variant=mixture_bn", "--objective=mixed_batch", "--bn_statistics=batch",
                    "--export_bn_statistics=batch")
    assert config.evaluation.bn_statistics == "batch" and config.export_bn_statistics == "batch"
    for flag in ("bn_statistics", "export_bn_statistics"):
        with pytest.raises(flags.IllegalFlagValueError, match=f"--{flag}=batch needs a functional"):
            _parse("--variant=oats", f"--{flag}=batch")
        with pytest.raises(flags.IllegalFlagValueError, match=f"--{flag}=batch needs a functional"):
            _parse("--architecture=rdi_small_cnn", f"--{flag}=batch")
    # The config refuses the same, before any training.
    with pytest.raises(ValueError, match="`bn_statistics` 'batch'.*Received: bn_statistics='batch', variant='ats'"):
        config_lib.ExperimentConfig(model=config_lib.ModelConfig(variant="ats"),
                                    evaluation=config_lib.EvalConfig(bn_statistics="batch"))
    with pytest.raises(ValueError, match="`export_bn_statistics` 'batch' is not supported by multi-exit"):
        config_lib.ExperimentConfig(model=config_lib.ModelConfig(architecture="rdi_small_cnn"),
                                    export_bn_statistics="batch")
    with pytest.raises(ValueError, match="`bn_statistics` must be one of.*Received: bn_statistics='both'"):
        config_lib.EvalConfig(bn_statistics="both")


def test_new_fields_round_trip_through_config_json_and_old_runs_load():
    import json

    from oat_tf.evaluation import loading

    config = _parse("--filters=4,8", "--hidden_units=16", "--variant=plain", "--bn_statistics=batch",
                    "--export_bn_statistics=batch")
    payload = json.loads(json.dumps(config_lib.to_dict(config)))
    assert payload["model"]["filters"] == [4, 8] and payload["model"]["hidden_units"] == 16
    assert payload["evaluation"]["bn_statistics"] == "batch" and payload["export_bn_statistics"] == "batch"
    assert loading.model_config_from_run(payload) == config.model
    # A config.json written before these fields existed loads with the defaults.
    for key in ("filters", "hidden_units"):
        del payload["model"][key]
    old = loading.model_config_from_run(payload)
    assert old.filters == () and old.hidden_units == 0


STUDY_FLAGFILES = sorted(glob.glob(os.path.join(testing.REPO_ROOT, "experiments", "study_*.flags")))


def _read_study(path):
    """The sweep flags of a study flagfile: {name: [values]} (every flag may repeat)."""
    values = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line[2:].partition("=")
            values.setdefault(name, []).append(value)
    return values


@pytest.mark.parametrize("path", STUDY_FLAGFILES, ids=os.path.basename)
def test_study_flagfile_runs_give_valid_configs(path):
    from oat_tf import sweep  # pylint: disable=import-outside-toplevel

    study = _read_study(path)
    assert study["report"][0] in sweep.REPORT_KINDS
    repeat_seeds = sweep.parse_repeat_seeds([s for v in study.get("repeat_seeds", []) for s in v.split(",")])
    jobs = sweep.plan_jobs(
        study["study"][0], "runs", study.get("common", []), study["run"],
        study.get("common_evaluate", []), study.get("evaluate", []),
        repeat_seeds=repeat_seeds,
        repeat_runs=[r for v in study.get("repeat_runs", []) for r in v.split(",")],
    )
    all_configs = {job.name: _parse(*job.flags) for job in jobs if job.kind == "train"}
    for job in jobs:
        if job.kind == "train" and job.repeat_of:
            # A repeat is its run with another seed and nothing else changed.
            repeat, base = all_configs[job.name], all_configs[job.repeat_of]
            assert repeat.train.seed == job.seed != base.train.seed
            assert dataclasses.replace(
                repeat, name=base.name, train=dataclasses.replace(repeat.train, seed=base.train.seed)
            ) == base
    configs = {job.name: all_configs[job.name] for job in jobs if job.kind == "train" and not job.repeat_of}
    assert len(configs) == len(study["run"])
    for name, config in configs.items():
        assert config.name == name and not config.export_dir
    frontier = sorted(
        c.lambda_sampling.values[0] for c in configs.values() if c.lambda_sampling.sampling == "fixed"
    )
    if study["study"][0] in ("oat_fashion_mnist", "oat_mnist"):
        # The frontier: every λ of S1 (study A also the unseen 0.15, 0.5, 0.9).
        unseen = (0.15, 0.5, 0.9) if study["study"][0] == "oat_fashion_mnist" else ()
        assert frontier == sorted(config_lib.S1 + unseen)
        variants = {c.model.variant for c in configs.values()}
        assert {"plain", "oat", "oat_single_bn"} <= variants
    if study["study"][0] == "quickstart_seeds":
        # The README's spread: the quickstart itself, three seeds, nothing else changed.
        quickstart = _parse("--flagfile=" + os.path.join(testing.REPO_ROOT, "experiments", "quickstart.flags"))
        assert sorted(c.train.seed for c in configs.values()) == [0, 1, 2]
        for config in configs.values():
            assert dataclasses.replace(
                config, name=quickstart.name, export_dir=quickstart.export_dir, runs_dir=quickstart.runs_dir,
                train=dataclasses.replace(config.train, seed=0),
            ) == quickstart
    if study["study"][0] == "woh_pgdat_gap":
        # Study A's PGD-AT at λ = 1 with the reference loop's clean pass ("mixed") and its PGD
        # step, alone and together, and with PyTorch's initialisation; every run evaluated with
        # the same attacks.
        study_a = _read_study(os.path.join(testing.REPO_ROOT, "experiments", "study_oat_fashion_mnist.flags"))
        base_job = next(job for job in sweep.plan_jobs(
            study_a["study"][0], "runs", study_a["common"], study_a["run"]) if job.name == "pgdat_1.0")
        base = _parse(*base_job.flags)
        assert len({c.evaluation for c in configs.values()}) == 1
        assert sorted((c.train.adversarial_bn_statistics, c.train_attack.step_size, c.train.weight_init)
                      for c in configs.values()) == [
            ("adversarial", 0.016527, "keras"), ("adversarial", 0.025, "keras"), ("adversarial", 0.025, "torch"),
            ("mixed", 0.016527, "keras"), ("mixed", 0.025, "keras")]
        for name, config in configs.items():
            assert dataclasses.replace(
                config, name=base.name, runs_dir=base.runs_dir, evaluation=base.evaluation,
                train=dataclasses.replace(config.train, adversarial_bn_statistics="adversarial", weight_init="keras"),
                train_attack=dataclasses.replace(config.train_attack, step_size=0.025),
            ) == base, name
    if study["study"][0] == "woh_torch_init":
        # Study A's frontier and OAT model, each as study A trains it but for PyTorch's initialisation.
        study_a = _read_study(os.path.join(testing.REPO_ROOT, "experiments", "study_oat_fashion_mnist.flags"))
        study_a_configs = {job.name: _parse(*job.flags) for job in sweep.plan_jobs(
            study_a["study"][0], "runs", study_a["common"], study_a["run"]) if job.kind == "train"}
        assert sorted(configs) == sorted(["pgdat_0.0", "pgdat_0.1", "pgdat_0.2", "pgdat_0.3", "pgdat_0.4",
                                          "pgdat_1.0", "oat_dual_ro128"])
        for name, config in configs.items():
            base = study_a_configs[name]
            assert config.train.weight_init == "torch" and base.train.weight_init == "keras"
            assert dataclasses.replace(
                config, runs_dir=base.runs_dir, evaluation=base.evaluation,
                train=dataclasses.replace(config.train, weight_init="keras"),
            ) == base, name
    if study["study"][0] == "mixture_bn":
        depths = {c.model.architecture for c in configs.values() if c.train.clean_fraction == 0.0}
        standard = {c.model.architecture for c in configs.values() if c.train.clean_fraction == 1.0}
        assert len(depths) >= 4 and depths == standard
        assert any(c.model.variant == "mixture_bn" for c in configs.values())
        assert any("--bn_statistics=batch" in job.flags for job in jobs if job.kind == "evaluate")


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--num_train_examples=-5", "num_train_examples must be an integer >= 1"),
        ("--num_train_examples=0", "num_train_examples must be an integer >= 1"),
        ("--validation_size=-3", "validation_size must be an integer >= 0"),
        ("--num_eval_examples=-1", "num_eval_examples must be an integer >= 1"),
        ("--max_checkpoints=0", "max_checkpoints must be >= 1"),
        ("--checkpoint_every_steps=-1", "checkpoint_every_steps must be >= 0"),
        ("--name=", "--name must be one non-empty path component"),
        ("--name=../x", "--name must be one non-empty path component"),
        ("--name=a/b", "--name must be one non-empty path component"),
    ],
)
def test_out_of_range_values_are_refused_not_replaced_by_defaults(flag, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        _parse(flag)


@pytest.mark.parametrize(
    "setting, flag, needs",
    [
        ("--variant=oat", "--widths=0.5,1", "slimmable"),
        ("--variant=plain", "--clean_fraction=0.3", "--objective=mixed_batch"),
        ("--attack=pgd", "--attack_decay=0.5", "--attack=mi_fgsm"),
        ("--architecture=small_cnn", "--exit_thresholds=none", "multi-exit"),
        ("--architecture=small_cnn", "--defence=average", "multi-exit"),
    ],
)
def test_flags_set_where_they_do_nothing_are_refused(setting, flag, needs):
    with pytest.raises(ValueError, match=rf"--{flag[2:].split('=')[0]} \(given: .*acts only with.*{needs}"):
        _parse(setting, flag)
    # The same flag at its own setting is fine, and the default is never an error.
    _parse(setting)


def test_flags_that_apply_are_accepted():
    assert _parse("--variant=oats", "--widths=0.5,1").model.widths == (0.5, 1.0)
    mixed = _parse("--variant=plain", "--objective=mixed_batch", "--clean_fraction=0.3")
    assert mixed.train.clean_fraction == 0.3
    assert _parse("--attack=mi_fgsm", "--attack_decay=0.5").train_attack.decay == 0.5


def test_config_checks_counts_and_names_without_flags():
    with pytest.raises(ValueError, match="`num_train_examples` must be an integer >= 1"):
        config_lib.DataConfig(num_train_examples=-5)
    with pytest.raises(ValueError, match="`validation_size` must be an integer >= 0"):
        config_lib.DataConfig(validation_size=-3)
    assert config_lib.DataConfig(validation_size=0).validation_size == 0
    with pytest.raises(ValueError, match="`max_checkpoints` must be >= 1"):
        config_lib.TrainConfig(max_checkpoints=0)
    with pytest.raises(ValueError, match="`name` must be one non-empty path component"):
        config_lib.ExperimentConfig(name="")
    with pytest.raises(ValueError, match="`export_dir` must be a directory path, or None"):
        config_lib.ExperimentConfig(export_dir="")


def test_flag_parsing_loads_no_tensorflow():
    # So that a bad flag is reported within a second, before TensorFlow starts.
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    code = (
        "import sys; import oat_tf.flags, oat_tf.run_directory, oat_tf.output_paths, "
        "oat_tf.checkpoint_state; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=testing.REPO_ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_sweep_knows_the_default_training_seed():
    from oat_tf import sweep

    assert _parse().train.seed == sweep.DEFAULT_TRAIN_SEED


def test_film_hidden_multiplier_reaches_the_model_config_and_needs_film():
    assert _parse().model.encoder.film_hidden_multiplier == 1
    wide = _parse("--variant=oat", "--film_hidden_multiplier=4")
    assert wide.model.encoder.film_hidden_multiplier == 4
    with pytest.raises(flags.IllegalFlagValueError, match="film_hidden_multiplier other than 1 needs"):
        _parse("--variant=plain", "--film_hidden_multiplier=2")
    with pytest.raises(flags.IllegalFlagValueError, match="film_hidden_multiplier"):
        _parse("--film_hidden_multiplier=0")


GRID_FLAGFILES = sorted(glob.glob(os.path.join(testing.REPO_ROOT, "experiments", "where_oat_holds", "*.flags")))


@pytest.mark.parametrize("path", GRID_FLAGFILES, ids=os.path.basename)
def test_every_run_of_the_where_oat_holds_grid_gives_a_valid_config(path, tmp_path):
    from oat_tf import sweep

    entries = {"common": [], "run": [], "repeat_seeds": [], "repeat_runs": []}
    study = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            for key in entries:
                if line.startswith(f"--{key}="):
                    value = line[len(key) + 3:]
                    entries[key] += [value] if key in ("common", "run") else value.split(",")
            if line.startswith("--study="):
                study = line[len("--study="):]
    jobs = sweep.plan_jobs(study, str(tmp_path), entries["common"], entries["run"],
                           repeat_seeds=sweep.parse_repeat_seeds(entries["repeat_seeds"]),
                           repeat_runs=entries["repeat_runs"])
    names = [job.name for job in jobs]
    first_seed = [n for n in names if "_seed" not in n]
    assert [n for n in first_seed if n.startswith("pgdat_")] == [
        "pgdat_0.0", "pgdat_0.1", "pgdat_0.2", "pgdat_0.3", "pgdat_0.4", "pgdat_1.0"]
    assert "oat_dual_ro128" in names
    # A repeated cell (the best one) repeats every run, frontier included, at each seed.
    for seed in entries["repeat_seeds"]:
        repeats = sorted(n for n in names if n.endswith(f"_seed{seed}"))
        assert repeats == sorted(f"{n}_seed{seed}" for n in first_seed)
    cell = os.path.basename(path)[: -len(".flags")]
    epochs = int(cell.split("_e")[1])
    for job in jobs:
        flagfile = tmp_path / f"{job.name}.flags"
        flagfile.write_text(job.flagfile_text)
        config = _parse(f"--flagfile={flagfile}")
        assert config.train.epochs == epochs
        assert config.train_attack.epsilon == pytest.approx(0.1)
        assert config.data.num_train_examples == 10000 and config.data.num_eval_examples == 1000
        assert config.train.seed == (int(job.name.split("_seed")[1]) if "_seed" in job.name else 0)
        if job.name.startswith("pgdat_"):
            assert config.model.variant == "plain"
            assert config.lambda_sampling.values == (float(job.name.split("_")[1]),)
        else:
            assert config.model.variant == "oat" and config.lambda_sampling.sampling == "element_wise"
        if job.name == "oat_zero50":
            assert config.lambda_sampling.zero_probability == 0.5
        if job.name == "oat_film4":
            assert config.model.encoder.film_hidden_multiplier == 4


def test_weight_init_flag_reaches_the_train_config():
    parsed = {value: _parse(f"--weight_init={value}").train.weight_init for value in config_lib.WEIGHT_INITS}
    assert parsed == {"keras": "keras", "torch": "torch"} and _parse().train.weight_init == "keras"
    with pytest.raises(flags.IllegalFlagValueError, match="weight_init"):
        _parse("--weight_init=glorot")
    with pytest.raises(ValueError, match="`weight_init` must be one of.*Received: weight_init='glorot'"):
        config_lib.TrainConfig(weight_init="glorot")


def test_lambda_range_is_inclusive_and_exact():
    grid = oat_flags.parse_lambdas(["0:1:0.05"])
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and 0.05 in grid and 0.15 in grid
    assert oat_flags.parse_lambdas(["0.2:0.4:0.1"]) == (0.2, 0.3, 0.4)
    assert oat_flags.parse_lambdas(["0.9", "0", "0.5"]) == (0.0, 0.5, 0.9)
    for bad in (["0:1:0"], ["1:0:0.1"], ["0:2:0.5"], ["a:b:c"]):
        with pytest.raises(ValueError, match="lambdas"):
            oat_flags.parse_lambdas(bad)


def test_mixed_precision_flag_and_jit_compile_with_determinism():
    assert _parse().train.mixed_precision == "float32"
    assert _parse("--mixed_precision=mixed_bfloat16").train.mixed_precision == "mixed_bfloat16"
    with pytest.raises(flags.IllegalFlagValueError, match="mixed_precision"):
        _parse("--mixed_precision=bfloat16")
    # XLA's max-pool gradient has no deterministic kernel: refused before any work.
    with pytest.raises(ValueError, match="--jit_compile needs --nodeterministic"):
        _parse("--jit_compile")
    assert _parse("--jit_compile", "--nodeterministic").train.jit_compile


def test_config_from_flags_reads_each_field_from_its_flag():
    values = flags.FlagValues()
    flags.DEFINE_float("learning_rate", 0.3, "", flag_values=values)
    flags.DEFINE_float("momentum", 0.8, "", flag_values=values)
    flags.DEFINE_float("weight_decay", 1e-3, "", flag_values=values)
    flags.DEFINE_string("lr_schedule", "constant", "", flag_values=values)
    values(["prog", "--momentum=0.5"])
    config = oat_flags.config_from_flags(
        config_lib.OptimizerConfig, values, flag_names={"schedule": "lr_schedule"}, warmup_epochs=2
    )
    assert config == config_lib.OptimizerConfig(
        learning_rate=0.3, momentum=0.5, weight_decay=1e-3, schedule="constant", warmup_epochs=2
    )
    # A field with neither a flag nor a value is an error, not its default.
    with pytest.raises(KeyError, match="OptimizerConfig.warmup_epochs has no flag --warmup_epochs"):
        oat_flags.config_from_flags(
            config_lib.OptimizerConfig, values, flag_names={"schedule": "lr_schedule"}
        )
