import pytest

from itool_ray.config import PRESETS, ConfigError, load_config, parse_overrides


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.run.name


def test_dotted_overrides_in_both_spellings():
    cfg = load_config("tiny", ["--mcts.num_children", "4", "--train.lr=1e-6", "--train.lora.enabled", "true"])
    assert cfg.mcts.num_children == 4
    assert cfg.train.lr == pytest.approx(1e-6)
    assert cfg.train.lora.enabled is True


def test_list_override_parses_as_yaml():
    cfg = load_config("tiny", ["--data.categories", "[simple, parallel]"])
    assert cfg.data.categories == ["simple", "parallel"]


def test_unknown_key_names_the_key_and_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["--mcts.num_childs", "4"])
    msg = str(e.value)
    assert "mcts.num_childs: unknown key" in msg
    assert "num_children" in msg


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="bogus: unknown key"):
        load_config("tiny", ["--bogus.x", "1"])


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["--train.loss", "foo"])
    assert "train.loss" in str(e.value) and "simpo" in str(e.value)


def test_out_of_range_value_names_the_key():
    with pytest.raises(ConfigError, match="mcts.num_children"):
        load_config("tiny", ["--mcts.num_children", "0"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="mcts.simulations"):
        load_config("tiny", ["--mcts.simulations", "many"])


def test_incompatible_zero3_without_workers():
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config("tiny", ["--distributed.zero_stage", "3", "--distributed.num_workers", "0"])


def test_fp16_on_cpu_is_rejected():
    with pytest.raises(ConfigError, match="fp16"):
        load_config("tiny", ["--distributed.precision", "fp16"])


def test_override_needs_a_value_and_a_dotted_key():
    with pytest.raises(ConfigError, match="missing a value"):
        parse_overrides(["--mcts.num_children"])
    with pytest.raises(ConfigError, match="dotted key"):
        parse_overrides(["--lr", "1"])


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a preset"):
        load_config(str(tmp_path / "nope.yaml"))


def test_file_can_build_on_a_preset(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("preset: tiny\nmcts:\n  simulations: 2\n")
    cfg = load_config(str(p))
    assert cfg.model.name_or_path == "tiny" and cfg.mcts.simulations == 2


def test_yaml_round_trip():
    cfg = load_config("quickstart")
    again = load_config(None, __import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg


def test_fleet_stays_through_training_only_where_the_cluster_holds_both():
    from actors.placement import fits_beside_fleet, fleet_resources, training_resources

    quick = load_config("quickstart")  # replica 2 CPUs + one 2-CPU training worker on a 2-core machine
    assert fleet_resources(quick) == {"CPU": 2} and training_resources(quick) == {"CPU": 2}
    assert not fits_beside_fleet(quick, {"CPU": 2})
    assert fits_beside_fleet(quick, {"CPU": 4})
    gpu = load_config(
        "llama31-8b-toolace",
        ["--replicas.resources", "{h100: 1}", "--distributed.resources_per_worker", "{h100: 1}"],
    )
    assert fleet_resources(gpu)["GPU"] == 8 and fleet_resources(gpu)["h100"] == 8
    assert not fits_beside_fleet(gpu, {"CPU": 400, "GPU": 8, "h100": 8})  # one 8-GPU node: training takes it
    assert fits_beside_fleet(gpu, {"CPU": 400, "GPU": 16, "h100": 16})
    assert not fits_beside_fleet(gpu, {"CPU": 400, "GPU": 16, "h100": 8})  # the other GPUs are another type
