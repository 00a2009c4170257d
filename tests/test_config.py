"""Configs load from YAML, presets validate, and bad values fail naming the key."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_config


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["synthetic-2d", "synthetic-3d", "isbi2012-2d", "hippocampus-3d"])
def test_presets_load(repo_root, name):
    cfg = load_config(repo_root / "configs" / f"{name}.yaml")
    assert cfg.name == name
    assert len(cfg.train.patch_size) == cfg.data.spatial_dims


def test_params_yaml_is_the_synthetic_default(repo_root):
    assert load_config(repo_root / "params.yaml") == load_config(repo_root / "configs" / "synthetic-2d.yaml")


def _keys(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix}
    return {k for key, value in node.items() for k in _keys(value, f"{prefix}.{key}" if prefix else key)} | (
        {prefix} - {""}
    )


def test_params_yaml_spells_out_every_key(repo_root):
    """DVC tracks params key by key and fails on a declared key the file lacks: params.yaml holds
    every key of the schema, exactly what `unet-pipeline config` writes (comments aside)."""
    from pipeline.config import Config, complete_yaml

    written = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert _keys(written) == _keys(Config().model_dump(mode="json"))
    cfg = load_config(repo_root / "params.yaml")
    body = "\n".join(line for line in (repo_root / "params.yaml").read_text().splitlines() if not line.startswith("#"))
    assert body + "\n" == complete_yaml(cfg)


@pytest.mark.parametrize("name", ["hippocampus-3d", "isbi2012-2d"])
def test_config_command_writes_a_complete_equivalent_config(tmp_path, repo_root, capsys, name):
    from pipeline.cli import main

    assert main(["config", "-c", str(repo_root / "configs" / f"{name}.yaml"), "-S", "train.epochs=3"]) == 0
    out = tmp_path / "params.yaml"
    out.write_text(capsys.readouterr().out)
    expected = load_config(repo_root / "configs" / f"{name}.yaml", {"train.epochs": 3})
    assert load_config(out) == expected
    assert _keys(yaml.safe_load(out.read_text())) == _keys(expected.model_dump(mode="json"))


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_config(_write(tmp_path, {"train": {"epoch": 3}}))


def test_spatial_dims_4_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.spatial_dims: .*(2|3).*got 4"):
        load_config(_write(tmp_path, {"data": {"spatial_dims": 4}}))


def test_negative_feature_count_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.features: .*positive.*-8"):
        load_config(_write(tmp_path, {"model": {"features": [16, -8, 32]}}))


def test_a_bad_switch_is_one_line_naming_the_choices(tmp_path):
    """true / false / auto switches (train.bf16, inference.channels_last): one line per bad key, not
    one per member of the union, and each value only as the file wrote it."""
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"train": {"bf16": "maybe"}, "inference": {"channels_last": 1}}))
    lines = str(err.value).splitlines()[1:]
    assert lines == [
        "  train.bf16: expected true, false or auto, got 'maybe'",
        "  inference.channels_last: expected true, false or auto, got 1",
    ]
    cfg = load_config(_write(tmp_path, {"train": {"bf16": False}, "inference": {"channels_last": "auto"}}))
    assert cfg.train.bf16 is False and cfg.inference.channels_last == "auto"


def test_wrong_type_and_mismatched_dims(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(_write(tmp_path, {"train": {"epochs": "many"}}))
    with pytest.raises(ConfigError, match=r"train\.patch_size=\[8, 8, 8\] has 3 entries but data\.spatial_dims=2"):
        load_config(_write(tmp_path, {"data": {"spatial_dims": 2}, "train": {"patch_size": [8, 8, 8]}}))


def test_flip_axes_out_of_range_is_named(tmp_path):
    for axes in ([2], [0, 0], []):
        with pytest.raises(ConfigError, match=r"train\.augment\.flip_axes=.* must be distinct axes in 0\.\.1") as err:
            load_config(_write(tmp_path, {"data": {"spatial_dims": 2}, "train": {"augment": {"flip_axes": axes}}}))
        assert "'spatial_dims'" not in str(err.value), "a cross-field error must not dump the whole config"


def test_overrides_apply_dotted_keys(tmp_path):
    cfg = load_config(_write(tmp_path, {}), {"train.epochs": 2, "model.padding": "same"})
    assert cfg.train.epochs == 2 and cfg.model.padding == "same"
    assert cfg.flat()["train.epochs"] == 2


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_help_and_config_commands_import_no_torch_monai_or_mlflow(tmp_path: Path) -> None:
    """`unet-pipeline --help` and `unet-pipeline config` answer without the heavy stack."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    code = (
        "import contextlib, io, json, sys\n"
        "from pipeline.cli import build_parser, main\n"
        "build_parser().format_help()\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    rc = main(['config', '-c', {str(repo / 'configs' / 'synthetic-2d.yaml')!r}])\n"
        "print(json.dumps({'rc': rc, 'yaml': 'spatial_dims: 2' in out.getvalue(),\n"
        "                  'loaded': [m for m in ('torch', 'monai', 'mlflow') if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "yaml": True, "loaded": []}
