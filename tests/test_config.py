import pytest

from engine.config import Device, HiddenFaces, PipelineConfig, Placement, Preset, TextureGuidance
from engine.errors import ConfigError


def test_presets_carry_the_papers_operating_points():
    default = PipelineConfig.from_name("default")
    flash = PipelineConfig.from_name("flash")
    assert default.preset is Preset.DEFAULT and flash.preset is Preset.FLASH
    assert default.shape.coarse_tokens == 4096 and default.shape.refine_tokens == 16384
    assert default.shape.coarse_steps == 25 and default.shape.refine_steps == 5
    assert default.shape.refine and not flash.shape.refine
    assert (default.texture.view_resolution, flash.texture.view_resolution) == (1024, 768)
    assert (default.texture.atlas_size, flash.texture.atlas_size) == (2048, 1024)
    assert default.texture.super_resolution and not flash.texture.super_resolution
    assert flash.texture.guidance is TextureGuidance.DISTILLED
    assert default.geometry.faces == 20000


def test_overrides_are_validated():
    cfg = PipelineConfig.from_name("default").with_overrides(faces=5000, texture_size=1024, device="cpu")
    assert cfg.geometry.faces == 5000 and cfg.texture.atlas_size == 1024 and cfg.runtime.device is Device.CPU
    for bad in (dict(faces=3), dict(texture_size=1000), dict(device="tpu"), dict(normal_map_size=100)):
        with pytest.raises(ConfigError):
            PipelineConfig.from_name("default").with_overrides(**bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        PipelineConfig.from_name("turbo")


def test_cpu_scaling_is_recorded_and_gpu_keeps_the_paper_sampling():
    cpu = PipelineConfig.from_name("default").for_device()
    assert cpu.shape.grid_resolution < 512 and any("CPU path" in n for n in cpu.notes)
    gpu = PipelineConfig.from_name("default").with_overrides(device="cuda").for_device()
    assert gpu.shape.grid_resolution == 512
    assert (gpu.geometry.visibility_views, gpu.geometry.visibility_resolution) == (512, 1024)
    assert any("texture fusion (backprojection, blending, 3D inpainting)" in n for n in gpu.notes)


def test_placement_override():
    config = PipelineConfig.from_name("default").with_overrides(placement="bounded_optimal")
    assert config.geometry.placement is Placement.BOUNDED_OPTIMAL
    with pytest.raises(ConfigError, match="unknown placement"):
        PipelineConfig.from_name("default").with_overrides(placement="midpoint")


def test_hidden_faces_override():
    assert PipelineConfig.from_name("default").geometry.hidden_faces is HiddenFaces.FLOOD_FILL
    config = PipelineConfig.from_name("default").with_overrides(hidden_faces="escape_rays")
    assert config.geometry.hidden_faces is HiddenFaces.ESCAPE_RAYS
    with pytest.raises(ConfigError, match="unknown hidden-face method"):
        PipelineConfig.from_name("default").with_overrides(hidden_faces="raster")
