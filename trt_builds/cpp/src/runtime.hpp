// AssetGen C++ runtime: loads one bucket of AOTInductor packages and runs the network chain with the
// engine's samplers ported from Python (engine/sampling/ddim_vpred.py, engine/sampling/texturegen_sampler.py).
// Tensors are ATen tensors on the engine's device; shapes are documented per method (assetgen.h for the
// host layouts). Errors are C++ exceptions here; c_api.cpp turns them into status codes.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace assetgen {

// A failure in reading the manifest or loading a package (ASSETGEN_PACKAGE_ERROR).
struct PackageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "key value" settings and "package <network> <file>" lines of a .manifest (trt_builds/aoti.py).
struct Manifest {
  std::string path;
  std::map<std::string, std::string> settings;
  std::map<std::string, std::string> packages;  // network -> absolute file path

  static Manifest read(const std::string& file_or_folder);
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
};

// DDIM tables of engine/sampling/ddim_vpred.py (DDIMVPred): float64 maths, stored float32.
struct DdimTables {
  at::Tensor timesteps, cx, cv;  // [S] float32 each
  static DdimTables build(int64_t steps, int64_t train_steps, double beta_start, double beta_end,
                          bool rescale_zero_snr, const at::Device& device);
};

class Engine {
 public:
  Engine(const std::string& packages, const std::string& device);

  const Manifest& manifest() const { return manifest_; }
  const at::Device& device() const { return device_; }

  // picture uint8 [S, S, 3] (CPU) -> coarse latents float32 [1, N, D]: DINOv2, context K/V, DDIM loop.
  at::Tensor shape_latents(const at::Tensor& picture, uint64_t seed);
  // latents float32 [1, N, D] -> field float32 [(G+1)^3] on the manifest's lattice.
  at::Tensor field(const at::Tensor& latents);
  // picture uint8 [S, S, 3]; normals, positions float32 [K, R, R, 3] in [0, 1] -> view latents
  // float32 [1, K, C, h, w] (image VAE encode, TextureGen prepare, flow sampler with the pinned reference).
  at::Tensor texture_latents(const at::Tensor& picture, const at::Tensor& normals,
                             const at::Tensor& positions, uint64_t seed);
  // view latents float32 [1, K, C, h, w] -> views float32 [K, 3, R, R] in [0, 1].
  at::Tensor decode_views(const at::Tensor& latents);

 private:
  std::vector<at::Tensor> run(const std::string& network, const std::vector<at::Tensor>& inputs);
  at::Tensor encode(const at::Tensor& image);  // [3, R, R] in [-1, 1] -> [1, C, h, w]

  Manifest manifest_;
  at::Device device_;
  std::map<std::string, std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> packages_;
  DdimTables ddim_;
};

}  // namespace assetgen
