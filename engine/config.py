"""Typed configuration: the paper's two operating points and the knobs a user may turn.

One place defines every operating point. The CLI, the pipeline and the benchmarks read these objects;
nothing is switched by environment variables. ``PipelineConfig.from_name("default" | "flash")`` gives
the paper's presets (sections 3, 5.2, 7.2, 7.3; Tables 5 and 6); ``with_overrides`` applies CLI flags
with validation; ``for_device`` scales sampling densities for a CPU run and says so in ``notes``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from engine.errors import ConfigError


class Preset(enum.Enum):
    DEFAULT = "default"
    FLASH = "flash"


class Device(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


class UvMethod(enum.Enum):
    """How the UV atlas is made (engine/geometry/uv_fast.py, uv_unwrap.py, uv_parallel.py)."""

    CHARTS = "charts"  # projection charts (axis labels, smoothed) + one bitmap packing: ~10x xatlas's speed
    XATLAS = "xatlas"  # xatlas charts (serial, or partitioned over RuntimeConfig.uv_workers processes)


class Placement(enum.Enum):
    """Where QEM edge collapse puts the surviving vertex (engine/geometry/simplify.py)."""

    ON_EDGE = "on_edge"  # paper 6.1: the quadric optimum projected onto the collapsed edge
    BOUNDED_OPTIMAL = "bounded_optimal"  # the quadric optimum when within one edge length of the midpoint


class HiddenFaces(enum.Enum):
    """How hidden-face removal decides the faces its views miss (engine/geometry/hidden_faces.py)."""

    FLOOD_FILL = "flood_fill"  # paper 6.2: normal-gated flood fill from the faces the views hit
    ESCAPE_RAYS = "escape_rays"  # rays that escape prove a face visible: fewer hidden faces kept, slower
    # either way an escape check (engine/geometry/hidden_faces_verify.py) keeps every face it proves visible


class RandomNetworks(enum.Enum):
    """Networks built in memory with random weights (benchmarks, tests: speed does not depend on values)."""

    TINY = "tiny"  # small configurations, for CPU tests
    PAPER = "paper"  # the paper's sizes (AssetGen's weights are not public)


class TextureGuidance(enum.Enum):
    CFG = "cfg"  # conditional + white-reference unconditional branch (default preset)
    DISTILLED = "distilled"  # guidance folded into one conditional pass (flash preset)


class InpaintFill(enum.Enum):
    """What fills the texels no view saw (engine/texture/inpaint.py): ``knn`` the UV rings then the
    k-nearest texels in 3D (flat patches); ``harmonic`` then the harmonic (Laplace) fill over the surface
    from the seen texels (engine/texture/harmonic_fill.py on the CPU, harmonic_fill_gpu.py in the GPU
    fusion)."""

    KNN = "knn"
    HARMONIC = "harmonic"


def _require(cond: bool, problem: str, fix: str) -> None:
    if not cond:
        raise ConfigError(problem, fix)


@dataclass(frozen=True)
class ShapeConfig:
    """MeshGen (paper 5.2-5.3) and mesh extraction (paper 6)."""

    coarse_tokens: int = 4096  # N latent tokens of the coarse VecSet
    latent_dim: int = 64  # D per token
    coarse_steps: int = 25  # distilled DDIM steps, CFG folded in
    dino_resolution_coarse: int = 518
    refine: bool = True  # coarse-to-refine stage (off in flash)
    refine_tokens: int = 16384
    refine_steps: int = 5
    dino_resolution_refine: int = 1022
    grid_resolution: int = 512  # marching-cubes grid (cells per axis)
    bounds: float = 1.01  # SDF volume spans [-bounds, bounds]^3 (normalised object units)
    shape_model: str | None = None  # Hunyuan3D-2 snapshot folder (--shape-model); None: not used
    weights: str | None = None  # AssetGen engine-format checkpoint folder (--weights); None: not used

    def __post_init__(self) -> None:
        _require(
            self.shape_model is None or self.weights is None,
            "both --shape-model and --weights were given",
            "choose one shape backbone: a Hunyuan3D-2 snapshot or AssetGen weights",
        )
        _require(
            16 <= self.grid_resolution <= 1024,
            f"grid resolution {self.grid_resolution} out of range",
            "use a value in [16, 1024]",
        )
        _require(
            self.coarse_steps >= 1 and self.refine_steps >= 1,
            "diffusion steps must be >= 1",
            "use a positive step count",
        )


@dataclass(frozen=True)
class GeometryConfig:
    """Geometry post-processing (paper 6)."""

    faces: int = 20000  # polygon budget of the exported mesh (exact upper bound)
    floater_min_fraction: float = 0.01  # generated meshes: parts under this share of the area are removed
    input_floater_fraction: float = 0.0  # ``process`` (--remove-floaters): 0 keeps every part of the mesh
    visibility_views: int = 512  # hidden-face removal viewpoints on a sphere (paper 6.2)
    visibility_resolution: int = 1024  # rays per view side
    hidden_faces: HiddenFaces = HiddenFaces.FLOOD_FILL  # faces the views miss (--hidden-faces)
    normal_map_size: int = 1024  # tangent-space normal map edge (paper Table 4)
    bake_max_distance: float = 0.01  # closest-point filter, share of the bounding-box diagonal
    placement: Placement = Placement.BOUNDED_OPTIMAL  # QEM survivor placement (--placement; paper: on_edge)
    uv_method: UvMethod = UvMethod.CHARTS  # UV atlas method (--uv)

    def __post_init__(self) -> None:
        for name in ("floater_min_fraction", "input_floater_fraction"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"floater fraction {value} is outside [0, 1)",
                     "use e.g. --remove-floaters 0.01 (parts under 1 % of the surface area)")
        _require(self.faces >= 4, f"face budget {self.faces} is below 4", "use --faces 4 or more")
        _require(
            self.faces <= 10_000_000,
            f"face budget {self.faces} is too large",
            "use --faces 10000000 or fewer",
        )
        _require(
            _is_pow2(self.normal_map_size) and 64 <= self.normal_map_size <= 8192,
            f"normal map size {self.normal_map_size} is not a power of two in [64, 8192]",
            "use e.g. 1024 or 2048",
        )
        _require(
            self.visibility_views >= 1 and self.visibility_resolution >= 16,
            "visibility sampling too small",
            "use >= 1 view and >= 16 px",
        )


@dataclass(frozen=True)
class TextureConfig:
    """TextureGen and texture fusion (paper 7)."""

    num_views: int = 10  # 8 around at 45 deg, top, bottom (paper 7.1)
    view_resolution: int = 1024  # per-view diffusion resolution (768 in flash)
    atlas_size: int = 2048  # exported base-colour atlas edge (1024 in flash)
    super_resolution: bool = True  # per-view super-resolution before fusion (off in flash)
    steps: int = 4  # distilled flow-matching Euler steps
    guidance: TextureGuidance = TextureGuidance.CFG
    blend_sharpness: float = 4.0  # alpha in the incidence weighting (paper 7.4)
    inpaint_neighbours: int = 8  # k nearest known texels per unknown texel
    mirror_back: bool = True  # weight-free path on the silhouette prior: the back takes the mirrored picture
    inpaint_fill: InpaintFill = InpaintFill.HARMONIC  # unseen texels: smooth fill over the surface
    harmonise_views: bool = True  # TextureGen's views: per-view gain + sub-pixel shift before the blend

    def __post_init__(self) -> None:
        _require(
            _is_pow2(self.atlas_size) and 64 <= self.atlas_size <= 8192,
            f"texture size {self.atlas_size} is not a power of two in [64, 8192]",
            "use --texture-size 1024 or 2048",
        )
        _require(
            self.view_resolution % 8 == 0 and 64 <= self.view_resolution <= 2048,
            f"view resolution {self.view_resolution} unsupported",
            "use a multiple of 8 in [64, 2048]",
        )


class Precision(enum.Enum):
    """What the diffusion transformers' linear layers run in (quant/): ``auto`` uses the recipe measured
    for this network, GPU architecture and weights when one exists (FP8 on Hopper/Ada, INT8 before),
    else bf16; ``fp8`` / ``int8`` use the network's recipe whatever weights it was measured on."""

    AUTO = "auto"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"


@dataclass(frozen=True)
class RuntimeConfig:
    """How the engine runs: device, seed, host parallelism, caches, where the networks come from."""

    device: Device = Device.CPU
    seed: int = 0
    uv_workers: int = 1  # UV parallelism: charts packing threads / xatlas processes (for_device sets cuda's)
    cpu_lane_workers: int = 2  # threads of the scheduler's host lane (UV, PNG encoding, file I/O)
    max_in_flight: int = 2  # requests admitted at once when pipelining a batch
    cache_dir: str | None = None  # JIT caches (numba, Triton, Inductor); None: $XDG_CACHE_HOME/assetgen
    random_networks: RandomNetworks | None = None  # build every network with random weights at this size
    precision: Precision = Precision.AUTO  # DiT linear layers (quant recipes)
    recipes_dir: str | None = None  # quantisation recipes; None: the package's quant/recipes
    compile_networks: bool = False  # torch.compile (Inductor) of each diffusion transformer block
    fused_kernels: bool = True  # CUDA: DiT norm/modulation/SwiGLU + activation quantisation as Triton passes

    def __post_init__(self) -> None:
        _require(self.uv_workers >= 1, f"uv_workers = {self.uv_workers} must be >= 1", "use 1 or more")
        _require(self.cpu_lane_workers >= 1, f"cpu_lane_workers = {self.cpu_lane_workers} must be >= 1",
                 "use 1 or more")
        _require(self.max_in_flight >= 1, f"max_in_flight = {self.max_in_flight} must be >= 1",
                 "use 1 or more")


def _choice(kind: type[enum.Enum], value: str, what: str, fix: str):
    """``kind(value)``, or the CLI's one-line error naming the unknown ``what``."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"unknown {what} '{value}'", fix) from None


@dataclass(frozen=True)
class PipelineConfig:
    preset: Preset = Preset.DEFAULT
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    notes: tuple[str, ...] = ()  # what was scaled or substituted, printed by the CLI

    @staticmethod
    def from_name(name: str) -> PipelineConfig:
        """The paper's presets: ``default`` (~30 s, 3 H100s in the paper) and ``flash`` (~14 s)."""
        try:
            preset = Preset(name)
        except ValueError:
            raise ConfigError(f"unknown preset '{name}'", "use --preset default or --preset flash") from None
        if preset is Preset.DEFAULT:
            return PipelineConfig(preset=preset)
        return PipelineConfig(
            preset=preset,
            shape=ShapeConfig(refine=False),
            texture=TextureConfig(
                view_resolution=768,
                atlas_size=1024,
                super_resolution=False,
                guidance=TextureGuidance.DISTILLED,
            ),
        )

    def with_overrides(
        self,
        *,
        faces: int | None = None,
        texture_size: int | None = None,
        normal_map_size: int | None = None,
        device: str | None = None,
        seed: int | None = None,
        placement: str | None = None,
        uv_method: str | None = None,
        hidden_faces: str | None = None,
        shape_model: str | None = None,
        weights: str | None = None,
        random_networks: str | None = None,
        cache_dir: str | None = None,
        max_in_flight: int | None = None,
        precision: str | None = None,
        remove_floaters: float | None = None,
        compile_networks: bool | None = None,
        fused_kernels: bool | None = None,
    ) -> PipelineConfig:
        """Apply CLI flags; every value is validated by the dataclasses' ``__post_init__``."""
        geometry, texture, runtime, shape = self.geometry, self.texture, self.runtime, self.shape
        if shape_model is not None or weights is not None:
            shape = replace(shape, shape_model=shape_model, weights=weights)
        if faces is not None:
            geometry = replace(geometry, faces=faces)
        if remove_floaters is not None:
            geometry = replace(geometry, input_floater_fraction=remove_floaters)
        if normal_map_size is not None:
            geometry = replace(geometry, normal_map_size=normal_map_size)
        if placement is not None:
            geometry = replace(geometry, placement=_choice(
                Placement, placement, "placement", "use --placement on_edge or --placement bounded_optimal"))
        if uv_method is not None:
            geometry = replace(geometry, uv_method=_choice(UvMethod, uv_method, "UV method",
                                                           "use --uv charts or --uv xatlas"))
        if hidden_faces is not None:
            geometry = replace(geometry, hidden_faces=_choice(
                HiddenFaces, hidden_faces, "hidden-face method",
                "use --hidden-faces flood_fill or --hidden-faces escape_rays"))
        if texture_size is not None:
            texture = replace(texture, atlas_size=texture_size)
        if device is not None:
            runtime = replace(runtime, device=_choice(Device, device, "device",
                                                      "use --device cpu or --device cuda"))
        if seed is not None:
            runtime = replace(runtime, seed=seed)
        if random_networks is not None:
            runtime = replace(runtime, random_networks=_choice(
                RandomNetworks, random_networks, "network size",
                "use --random-networks tiny or --random-networks paper"))
        if cache_dir is not None:
            runtime = replace(runtime, cache_dir=cache_dir)
        if max_in_flight is not None:
            runtime = replace(runtime, max_in_flight=max_in_flight)
        if precision is not None:
            runtime = replace(runtime, precision=_choice(Precision, precision, "precision",
                                                         "use --precision auto, bf16, fp8 or int8"))
        if compile_networks is not None:
            runtime = replace(runtime, compile_networks=compile_networks)
        if fused_kernels is not None:
            runtime = replace(runtime, fused_kernels=fused_kernels)
        return replace(self, shape=shape, geometry=geometry, texture=texture, runtime=runtime)

    def for_device(self) -> PipelineConfig:
        """Scale sampling densities for a CPU run, and say so in ``notes``.

        On ``cpu`` everything is scaled for a 2-core budget (< 3 min per image). On ``cuda`` the geometry
        stage runs its GPU kernels at the paper's sampling (512^3 grid, 512 views at 1024 px); UV
        unwrapping runs on CPU worker processes and the texture on its CPU reference, as the note says.
        """
        notes = list(self.notes)
        shape, geometry = self.shape, self.geometry
        if self.runtime.device is not Device.CPU:
            runtime = self.runtime
            if runtime.uv_workers == 1:
                runtime = replace(runtime, uv_workers=_usable_cpus())
            notes.append(
                "cuda: watertight repair, marching cubes, floaters + simplification, hidden faces, the "
                "normal bake and texture fusion (backprojection, blending, 3D inpainting) run on the GPU; "
                "UV unwrapping runs partitioned on CPU worker processes; process's texture transfer runs "
                "its CPU reference"
            )
            return replace(self, runtime=runtime, notes=tuple(notes))
        if shape.grid_resolution > CPU_GRID_RESOLUTION:
            shape = replace(shape, grid_resolution=CPU_GRID_RESOLUTION)
            notes.append(
                f"CPU path: grid {CPU_GRID_RESOLUTION}^3 instead of {self.shape.grid_resolution}^3 for the "
                f"shape prior's marching cubes and any watertight repair of an input mesh"
            )
        if (
            geometry.visibility_views > CPU_VISIBILITY_VIEWS
            or geometry.visibility_resolution > CPU_VISIBILITY_RESOLUTION
        ):
            geometry = replace(
                geometry,
                visibility_views=min(geometry.visibility_views, CPU_VISIBILITY_VIEWS),
                visibility_resolution=min(geometry.visibility_resolution, CPU_VISIBILITY_RESOLUTION),
            )
            notes.append(
                f"CPU path: hidden-face removal casts {geometry.visibility_views} views at "
                f"{geometry.visibility_resolution} px instead of {self.geometry.visibility_views} at "
                f"{self.geometry.visibility_resolution} px"
            )
        return replace(self, shape=shape, geometry=geometry, notes=tuple(notes))


CPU_GRID_RESOLUTION = 192
CPU_VISIBILITY_VIEWS = 96
CPU_VISIBILITY_RESOLUTION = 256


def _usable_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0
