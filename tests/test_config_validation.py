"""Early checks of a training config: rules between keys (`TrainConfig.validate`), one definition per
enumeration, and what the keys point to (`rl.input_checks`: reward functions, policies, codebooks, datasets)."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from rl.config import TRAIN_TARGETS, TrainConfig
from rl.config_io import ConfigError, load_config
from rl.input_checks import (InputError, check_codebook, check_dataset, check_policy, check_reward_terms,
                             validate_sft_inputs, validate_train_inputs)
from rl.policy.config import PolicyConfigError

CONFIG = "configs/tiny_smoke.yaml"


def _config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG, list(overrides))


def _train_config(assets, *overrides: str) -> TrainConfig:
    return _config(f"policy_init={assets['policy']}", f"data.train={assets['train']}", f"data.val={assets['val']}",
                   *overrides)


# --- rules between keys ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["expert", "joint"])
def test_flow_train_targets_need_expert_rollouts(target):
    with pytest.raises(ConfigError, match=rf"grpo.train_target='{target}'.*rollout.action_source='tokens'"):
        _config(f"grpo.train_target={target}", "rollout.action_source=tokens")


def test_vlm_train_target_refuses_rewarding_the_experts_plan():
    with pytest.raises(ConfigError, match=r"grpo.train_target='vlm'.*set rollout.action_source=tokens \(got 'expert'\)"):
        _config("grpo.train_target=vlm", "rollout.action_source=expert")


def test_vlm_train_target_accepts_token_rollouts():
    cfg = _config("grpo.train_target=vlm", "rollout.action_source=tokens", "rollout.pace_std=0")
    assert (cfg.grpo.train_target, cfg.rollout.action_source) == ("vlm", "tokens")


@pytest.mark.parametrize("target", ["vlm", "joint"])
def test_greedy_group_reasoning_serves_the_expert_alone(target):
    source = "tokens" if target == "vlm" else "expert"
    with pytest.raises(ConfigError, match=rf"rollout.group_reasoning='greedy'.*\(got '{target}'\)"):
        _config(f"grpo.train_target={target}", f"rollout.action_source={source}", "rollout.group_reasoning=greedy",
                "rollout.pace_std=0")
    with pytest.raises(ConfigError, match=r"rollout.group_reasoning='first': expected one of \('auto', 'sampled', 'greedy'\)"):
        _config("rollout.group_reasoning=first")
    assert _config("grpo.train_target=expert", "rollout.group_reasoning=greedy").rollout.group_reasoning == "greedy"
    # "auto" (the default) is greedy only while the VLM is frozen
    assert [_config(f"grpo.train_target={t}", f"rollout.action_source={s}", "rollout.pace_std=0").group_reasoning()
            for t, s in (("expert", "expert"), ("joint", "expert"), ("vlm", "tokens"))] == ["greedy", "sampled", "sampled"]


def test_flow_start_is_one_of_the_named_starts():
    with pytest.raises(ConfigError, match=r"rollout.flow_start='zero': expected one of \('noisy', 'prior', 'scored'\)"):
        _config("rollout.flow_start=zero")
    assert _config("rollout.flow_start=prior").rollout.flow_start == "prior"
    with pytest.raises(ConfigError, match=r"rollout.flow_start='scored' needs rollout.flow_noise > 0"):
        _config("rollout.flow_start=scored", "rollout.flow_noise=0")


def test_flow_ratio_is_one_of_the_named_ratios():
    with pytest.raises(ConfigError, match=r"grpo.flow_ratio='token': expected one of \('step', 'dimension'\)"):
        _config("grpo.flow_ratio=token")
    assert _config("grpo.flow_ratio=dimension", "rollout.pace_std=0").grpo.flow_ratio == "dimension"


def test_std_scope_is_group_or_batch():
    with pytest.raises(ConfigError, match=r"grpo.std_scope='scene': expected one of \('group', 'batch'\)"):
        _config("grpo.std_scope=scene")
    assert _config("grpo.std_scope=batch").grpo.std_scope == "batch"


def test_a_drawn_pace_needs_the_expert_a_step_ratio_and_a_positive_rate():
    with pytest.raises(ConfigError, match=r"rollout.pace_std=-0.1: must be >= 0"):
        _config("rollout.pace_std=-0.1")
    with pytest.raises(ConfigError, match=r"rollout.pace_std=0.3 trains the expert's pace head.*'vlm'.*add "
                                          r"rollout.pace_std=0"):
        _config("rollout.pace_std=0.3", "grpo.train_target=vlm", "rollout.action_source=tokens")
    with pytest.raises(ConfigError, match=r"rollout.pace_std=0.3 needs grpo.flow_ratio step"):
        _config("rollout.pace_std=0.3", "grpo.flow_ratio=dimension")
    with pytest.raises(ConfigError, match=r"grpo.pace_lr=0.0: must be > 0"):
        _config("rollout.pace_std=0.3", "grpo.pace_lr=0")
    with pytest.raises(PolicyConfigError, match=r"policy.expert.pace_min_scale=1.5: must lie in \(0, 1\]"):
        _config("policy.expert.pace_min_scale=1.5")
    assert _config("rollout.pace_std=0.3").rollout.pace_std == 0.3


def test_the_default_recipe_draws_a_pace_and_divides_advantages_by_the_batchs_spread():
    cfg = load_config(TrainConfig, "configs/tiny.yaml", [])
    assert (cfg.rollout.pace_std, cfg.grpo.pace_lr, cfg.grpo.std_scope) == (0.3, 3e-4, "batch")
    assert TrainConfig().rollout.pace_std == 0.0  # off outside the tiny recipe (e.g. the NAVSIM config's VLM target)


def test_unknown_sample_types_name_the_key_and_the_valid_set():
    with pytest.raises(ConfigError, match=r"sft.sample_types: unknown sample type\(s\) \['positive'\].*'pos', 'neg', 'rec'"):
        _config("sft.sample_types=[positive,rec]")
    with pytest.raises(ConfigError, match=r"grpo.schedule.mix: unknown sample type\(s\) \['negative'\]"):
        _config("grpo.schedule.mix.negative=0.5")


def test_reward_terms_logged_under_the_same_name_are_refused():
    with pytest.raises(ConfigError, match=r"scorer.rewards\[1\] \('pdms'\) and scorer.rewards\[0\] are both logged as 'pdms'"):
        _config("scorer.rewards=[{name: pdms}, {name: pdms, kwargs: {version: v2}}]")
    cfg = _config("scorer.rewards=[{name: pdms}, {name: pdms, label: pdms_v2, kwargs: {version: v2}}]")
    assert [t.label for t in cfg.scorer.rewards] == [None, "pdms_v2"]


def test_each_enumeration_is_defined_once():
    import rl.config
    import rl.evaluate
    import rl.grpo.objective
    import rl.policy.config
    import sim.conventions

    assert rl.grpo.objective.TRAIN_TARGETS is TRAIN_TARGETS
    assert rl.config.ACTION_SOURCES is rl.policy.config.ACTION_SOURCES
    assert rl.config.SAMPLE_TYPES is sim.conventions.SAMPLE_TYPES
    assert rl.evaluate.ACTION_SOURCES is rl.policy.config.ACTION_SOURCES
    with pytest.raises(ConfigError, match=r"eval.version='v3': expected one of \('v1', 'v2'\)"):
        _config("eval.version=v3")


# --- reward functions ----------------------------------------------------------------------------------------------

def test_a_misspelled_reward_name_suggests_the_registered_one():
    cfg = _config("scorer.rewards=[{name: pdms}, {name: negativ_l2, weight: -5.0}]")
    with pytest.raises(InputError) as err:
        check_reward_terms(cfg.scorer.rewards)
    assert "scorer.rewards[1].name='negativ_l2': no registered reward of that name; did you mean 'negative_l2'?" in str(err.value)


def test_a_misspelled_reward_kwarg_names_the_parameters():
    cfg = _config("scorer.rewards=[{name: pdms, kwargs: {versio: v1}}]")
    with pytest.raises(InputError) as err:
        check_reward_terms(cfg.scorer.rewards)
    assert "scorer.rewards[0].kwargs: pdms() has no parameter 'versio'; did you mean 'version'?" in str(err.value)


def test_plugin_files_must_exist_and_define_the_function(tmp_path):
    plugin = tmp_path / "my_reward.py"
    plugin.write_text("def keep_right(batch, weight_m=1.0, *, side):\n    return [{'reward': 0.0} for _ in batch]\n")
    missing = _config(f"scorer.rewards=[{{name: '{tmp_path}/nothere.py:keep_right'}}]")
    with pytest.raises(InputError, match=r"scorer.rewards\[0\].name='.*nothere.py:keep_right': plug-in file .* not found"):
        check_reward_terms(missing.scorer.rewards)
    typo = _config(f"scorer.rewards=[{{name: '{plugin}:keep_rigth'}}]")
    with pytest.raises(InputError, match=r"my_reward.py has no callable 'keep_rigth'; did you mean 'keep_right'\?"):
        check_reward_terms(typo.scorer.rewards)
    broken = tmp_path / "broken_reward.py"
    broken.write_text("import nonexistent_package_for_rewards\n\ndef f(batch):\n    return []\n")
    with pytest.raises(InputError, match=r"scorer.rewards\[0\].name=.*broken_reward.py:f'.*importing .*broken_reward.py failed"):
        check_reward_terms(_config(f"scorer.rewards=[{{name: '{broken}:f'}}]").scorer.rewards)
    no_side = _config(f"scorer.rewards=[{{name: '{plugin}:keep_right', kwargs: {{weight_m: 2.0}}}}]")
    with pytest.raises(InputError, match=r"scorer.rewards\[0\].kwargs=\{'weight_m': 2.0\}: keep_right.*missing a required argument: 'side'"):
        check_reward_terms(no_side.scorer.rewards)
    good = _config(f"scorer.rewards=[{{name: '{plugin}:keep_right', kwargs: {{weight_m: 2.0, side: left}}}}]")
    check_reward_terms(good.scorer.rewards)  # resolves and binds: no error


def test_module_specs_resolve_and_name_a_missing_function():
    good = _config("scorer.rewards=[{name: 'rewards.plugins.time_headway:time_headway', kwargs: {target_s: 2.0}}]")
    check_reward_terms(good.scorer.rewards)
    typo = _config("scorer.rewards=[{name: 'rewards.plugins.time_headway:time_headwy'}]")
    with pytest.raises(InputError, match=r"has no callable 'time_headwy'; did you mean 'time_headway'\?"):
        check_reward_terms(typo.scorer.rewards)
    no_module = _config("scorer.rewards=[{name: 'rewards.plugins.nomodule:f'}]")
    with pytest.raises(InputError, match=r"scorer.rewards\[0\].name=.*cannot import module 'rewards.plugins.nomodule'"):
        check_reward_terms(no_module.scorer.rewards)


# --- policies, codebooks, datasets ----------------------------------------------------------------------------------

def test_valid_training_inputs_pass(tiny_grpo_assets):
    validate_train_inputs(_train_config(tiny_grpo_assets))


def test_policy_init_that_is_not_a_policy_names_the_key(tiny_grpo_assets):
    with pytest.raises(InputError, match=r"policy_init=.*data: .*data/manifest.json is missing: not a policy checkpoint"):
        validate_train_inputs(_train_config(tiny_grpo_assets, f"policy_init={tiny_grpo_assets['root'] / 'data'}"))
    with pytest.raises(InputError, match=r"policy_init is not set"):
        validate_train_inputs(_config(f"data.train={tiny_grpo_assets['train']}"))


def test_plan_interval_must_match_the_starting_policy(tiny_grpo_assets):
    with pytest.raises(InputError, match=r"policy.expert.interval_s=0.25, but policy_init=.* plans every 0.5 s"):
        validate_train_inputs(_train_config(tiny_grpo_assets, "policy.expert.interval_s=0.25"))


def test_missing_or_foreign_datasets_name_the_key(tiny_grpo_assets, tmp_path):
    with pytest.raises(InputError, match=r"data.val=.*nothere: no such dataset"):
        validate_train_inputs(_train_config(tiny_grpo_assets, f"data.val={tmp_path / 'nothere'}"))
    with pytest.raises(InputError, match=r"data.train=.*policy: a policy directory, not a dataset"):
        check_dataset("data.train", str(tiny_grpo_assets["policy"]))
    assert check_dataset("data.train", str(tiny_grpo_assets["train"])) == 24


def test_a_shard_without_the_expected_columns_is_named(tiny_grpo_assets, tmp_path):
    copy = tmp_path / "train"
    shutil.copytree(tiny_grpo_assets["train"], copy)
    shard = sorted(copy.glob("shard-*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.drop(["images"]).replace_schema_metadata(table.schema.metadata), shard)
    with pytest.raises(InputError, match=rf"data.train={copy}: .*{shard.name}: missing column 'images'"):
        check_dataset("data.train", str(copy))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match=rf"data.train={copy}: .*{shard.name}: not a readable Parquet shard"):
        check_dataset("data.train", str(copy))


def test_codebook_path_must_exist_and_parse(tiny_grpo_assets, tmp_path):
    check_codebook("policy.codebook.path", str(tiny_grpo_assets["codebook"]))
    with pytest.raises(InputError, match=r"policy.codebook.path=.*none.json: codebook file not found"):
        check_codebook("policy.codebook.path", str(tmp_path / "none.json"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match=r"policy.codebook.path=.*broken.json: .*not an action codebook"):
        check_codebook("policy.codebook.path", str(broken))
    cfg = _config(f"data.train={tiny_grpo_assets['train']}", f"policy.codebook.path={tmp_path / 'none.json'}")
    with pytest.raises(InputError, match=r"policy.codebook.path=.*none.json"):
        validate_sft_inputs(cfg)


def test_check_policy_names_the_key(tiny_grpo_assets, tmp_path):
    info = check_policy("sft.init", str(tiny_grpo_assets["policy"]))
    assert info.has_codebook and info.manifest["format_version"] == 1
    with pytest.raises(InputError, match=r"sft.init=.*nothere: no such policy directory"):
        check_policy("sft.init", str(tmp_path / "nothere"))


def test_valid_sft_inputs_pass_and_expert_stage_needs_an_init(tiny_grpo_assets):
    a = tiny_grpo_assets
    validate_sft_inputs(_config(f"data.train={a['train']}", f"policy.codebook.path={a['codebook']}"))
    validate_sft_inputs(_config(f"data.train={a['train']}", "sft.stage=expert", f"sft.init={a['policy']}"))
    with pytest.raises(InputError, match=r"sft.stage=expert trains the expert on a trained VLM: set sft.init"):
        validate_sft_inputs(_config(f"data.train={a['train']}", "sft.stage=expert"))


def test_the_scene_cache_is_a_count_of_scenes_and_a_negative_one_names_the_key():
    with pytest.raises(ConfigError, match=r"data.scene_cache=-1: expected >= 0"):
        _config("data.scene_cache=-1")
    assert TrainConfig().data.scene_cache == 256  # sized for camera-bearing NAVSIM scenes
    assert _config().data.scene_cache == 2048  # the tiny world's whole training split (1600 scenes)
