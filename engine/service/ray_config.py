"""``RayConfig``: where ``assetgen serve --backend ray`` runs the engine's two halves (typed, no Ray import).

Replicas and GPUs per replica are configuration, not code: ``engine/service/ray_deployments.py`` turns
this into Ray Serve deployment options. With no ``address`` the service's worker process starts a local
Ray instance of ``num_cpus`` CPUs (stopped with it); with one (``auto``, ``host:6379``, ``ray://...``) it
connects to that cluster and leaves it running.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from engine.config import Device
from engine.errors import ConfigError

HALVES = ("shape", "texture")


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: a local Ray instance in the worker process
    num_cpus: int | None = None  # the local instance's CPUs (None: Ray counts them); not with an address
    shape_replicas: int = 1
    texture_replicas: int = 1
    shape_gpus: float | None = None  # GPUs per shape replica; None: 1 on --device cuda, else 0
    texture_gpus: float | None = None  # GPUs per texture replica (fractions share a card)
    replica_cpus: float = 1.0  # CPUs Ray reserves per replica
    max_ongoing_requests: int = 1  # requests one replica runs at once (its scheduler overlaps them)
    app_prefix: str = "assetgen"  # Serve application names: <prefix>-shape, <prefix>-texture

    def __post_init__(self) -> None:
        for half in HALVES:
            replicas, gpus = getattr(self, f"{half}_replicas"), getattr(self, f"{half}_gpus")
            if replicas < 1:
                raise ConfigError(f"{half} replicas {replicas} is below 1",
                                  f"use --{half}-replicas 1 or more")
            if gpus is not None and gpus < 0:
                raise ConfigError(f"{half} GPUs per replica {gpus:g} is negative", f"use --{half}-gpus >= 0")
        if self.replica_cpus < 0 or self.max_ongoing_requests < 1:
            raise ConfigError(f"replica_cpus {self.replica_cpus:g} / max_ongoing_requests "
                              f"{self.max_ongoing_requests} out of range", "use replica_cpus >= 0 and >= 1")
        if self.address is not None and self.num_cpus is not None:
            raise ConfigError("--ray-cpus sizes a local Ray instance but --ray-address names a cluster",
                              "drop --ray-cpus (the cluster has its own) or drop --ray-address")
        if self.num_cpus is not None:
            needed = (self.shape_replicas + self.texture_replicas) * self.replica_cpus
            if needed > self.num_cpus:
                raise ConfigError(f"{self.shape_replicas + self.texture_replicas} replicas need {needed:g} "
                                  f"CPUs but the local Ray instance has {self.num_cpus}",
                                  "raise --ray-cpus or lower --shape-replicas / --texture-replicas")

    def gpus(self, half: str, device: Device) -> float:
        value = getattr(self, f"{half}_gpus")
        if value is None:
            return 1.0 if device is Device.CUDA else 0.0
        return value

    def check_device(self, device: Device) -> None:
        """Ray hides every GPU from an actor that reserves none, and never places one that reserves GPUs
        on a node without them: the engine's device and the GPUs per replica must agree."""
        for half in HALVES:
            gpus = self.gpus(half, device)
            if device is Device.CUDA and gpus == 0:
                raise ConfigError(f"--{half}-gpus 0 with --device cuda: Ray hides every GPU from such a "
                                  "replica", f"use --{half}-gpus 1 (or a fraction, e.g. 0.5, to share one)")
            if device is Device.CPU and gpus > 0:
                raise ConfigError(f"--{half}-gpus {gpus:g} with --device cpu",
                                  f"use --{half}-gpus 0, or --device cuda")

    def actor_options(self, half: str, device: Device) -> dict:
        """Ray actor options of one half's replicas."""
        return {"num_cpus": self.replica_cpus, "num_gpus": self.gpus(half, device)}


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: one worker process owns the engine; ray: the shape and texture halves run "
                   "as Ray Serve deployments (pip install -e '.[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--backend ray: an existing Ray cluster (auto, host:6379, ray://host:10001); "
                   "default: a local Ray instance started and stopped with the server")
    p.add_argument("--ray-cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray instance")
    for half in HALVES:
        p.add_argument(f"--{half}-replicas", type=int, default=1, metavar="N",
                       help=f"{half} deployment replicas")
        p.add_argument(f"--{half}-gpus", type=float, default=None, metavar="GPUS",
                       help=f"GPUs per {half} replica (default 1 with --device cuda, else 0)")


def ray_config(args: argparse.Namespace) -> RayConfig:
    return RayConfig(address=args.ray_address, num_cpus=args.ray_cpus, shape_replicas=args.shape_replicas,
                     texture_replicas=args.texture_replicas, shape_gpus=args.shape_gpus,
                     texture_gpus=args.texture_gpus)
