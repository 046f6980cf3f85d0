"""Typed config: defaults documented in default.yaml, strict keys and types, layering."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from configs import CONFIG_DIR, DEFAULT_YAML
from configs.loader import ConfigError, dump_yaml, to_dict
from configs.schema import ProjectConfig, load_config


def leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        keys |= leaf_keys(value, path) if isinstance(value, dict) else {path}
    return keys


def test_default_yaml_equals_dataclass_defaults():
    assert load_config() == ProjectConfig()


def test_default_yaml_documents_every_field():
    documented = leaf_keys(yaml.safe_load(DEFAULT_YAML.read_text()))
    fields = leaf_keys(to_dict(ProjectConfig()))
    # a nested-dataclass field that is a mapping in YAML counts once per leaf
    assert fields - documented == set(), "add these fields to configs/default.yaml"


def test_every_default_yaml_value_line_has_a_comment():
    for number, line in enumerate(DEFAULT_YAML.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue
        assert "#" in line, f"configs/default.yaml line {number} has no comment: {line!r}"


def test_unknown_key_names_key_file_and_allowed_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workspace:\n  workrs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    message = str(err.value)
    assert "workspace.workrs" in message and str(bad) in message
    assert "Did you mean 'workers'" in message and "root, workers" in message


def test_unknown_section_and_wrong_type():
    with pytest.raises(ConfigError, match="unknown key 'nosuch'"):
        load_config(overrides=["nosuch.key=1"])
    with pytest.raises(ConfigError, match="'workspace.workers' must be an integer"):
        load_config(overrides=["workspace.workers=two"])
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        load_config(overrides=["workspace.workers=0"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "absent.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("workspace: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([broken])


def test_layers_apply_in_order(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("workspace:\n  root: from_file\n  workers: 3\n")
    cfg = load_config([overlay], ["workspace.root=from_cli"])
    assert cfg.workspace.root == "from_cli" and cfg.workspace.workers == 3


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["workspace.workers=2"])
    saved = tmp_path / "resolved.yaml"
    dump_yaml(cfg, saved)
    assert load_config([saved]) == cfg


@pytest.mark.parametrize("overlay", sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
def test_every_shipped_overlay_loads(overlay):
    cfg = load_config([CONFIG_DIR / overlay])
    assert dataclasses.is_dataclass(cfg)
