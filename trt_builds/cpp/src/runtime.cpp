// See runtime.hpp. Every numeric step mirrors a named Python function; the comments name it.
#include "runtime.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace assetgen {

// ------------------------------------------------------------------------------------------ manifest
Manifest Manifest::read(const std::string& file_or_folder) {
  fs::path path(file_or_folder);
  if (fs::is_directory(path)) {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.path().extension() == ".manifest") found.push_back(entry.path());
    if (found.size() != 1)
      throw PackageError(path.string() + " holds " + std::to_string(found.size()) +
                         " .manifest files; pass one of them");
    path = found[0];
  }
  std::ifstream in(path);
  if (!in) throw PackageError("cannot read manifest " + path.string());
  Manifest m;
  m.path = path.string();
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string key, a, b;
    words >> key >> a;
    if (key == "package") {
      words >> b;
      m.packages[a] = (path.parent_path() / b).string();
    } else {
      m.settings[key] = a;
    }
  }
  return m;
}

int64_t Manifest::integer(const std::string& key) const {
  auto it = settings.find(key);
  if (it == settings.end()) throw PackageError("manifest " + path + " lacks '" + key + "'");
  return std::stoll(it->second);
}

double Manifest::real(const std::string& key) const {
  auto it = settings.find(key);
  if (it == settings.end()) throw PackageError("manifest " + path + " lacks '" + key + "'");
  return std::stod(it->second);
}

// -------------------------------------------------------------------------- DDIM (ddim_vpred.py)
DdimTables DdimTables::build(int64_t steps, int64_t train_steps, double beta_start, double beta_end,
                             bool rescale_zero_snr, const at::Device& device) {
  if (steps < 1 || steps > train_steps) throw std::invalid_argument("DDIM steps out of range");
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  // scaled_linear_alphas_cumprod: betas = linspace(sqrt(b0), sqrt(b1), T)^2, abar = cumprod(1 - betas)
  at::Tensor betas = at::linspace(std::sqrt(beta_start), std::sqrt(beta_end), train_steps, f64).pow(2);
  at::Tensor abar = at::cumprod(1.0 - betas, 0);
  if (rescale_zero_snr) {  // rescale_zero_terminal_snr (Lin et al. 2024, Algorithm 1)
    at::Tensor s = abar.sqrt();
    at::Tensor s0 = s[0].clone(), s_last = s[-1].clone();
    s = (s - s_last) * s0 / (s0 - s_last);
    abar = s.pow(2);
  }
  // trailing_timesteps: round(arange(T, 0, -T/S)) - 1, first S
  double ratio = static_cast<double>(train_steps) / static_cast<double>(steps);
  at::Tensor ts = (at::round(at::arange(static_cast<double>(train_steps), 0.0, -ratio, f64))
                       .to(at::kLong) - 1).slice(0, 0, steps);
  at::Tensor a = abar.index_select(0, ts);
  at::Tensor a_prev = at::cat({abar.index_select(0, ts.slice(0, 1)), at::ones({1}, f64)});
  at::Tensor alpha = a.sqrt(), sigma = (1 - a).sqrt();
  at::Tensor ap = a_prev.sqrt(), sp = (1 - a_prev).sqrt();
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  return {ts.to(at::kDouble).to(f32), (ap * alpha + sp * sigma).to(f32), (sp * alpha - ap * sigma).to(f32)};
}

// ------------------------------------------------------------------------------------------ engine
Engine::Engine(const std::string& packages, const std::string& device)
    : manifest_(Manifest::read(packages)), device_(device) {
  for (const auto& [network, file] : manifest_.packages) {
    if (!fs::is_regular_file(file)) throw PackageError("package file missing: " + file);
    try {
      packages_[network] = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          file, "model", false, 1, device_.is_cuda() ? device_.index() : -1);
    } catch (const std::exception& e) {
      throw PackageError("cannot load " + file + ": " + e.what());
    }
  }
  ddim_ = DdimTables::build(manifest_.integer("coarse_steps"), manifest_.integer("ddim_train_steps"),
                            manifest_.real("ddim_beta_start"), manifest_.real("ddim_beta_end"),
                            manifest_.integer("ddim_rescale_zero_snr") != 0, device_);
}

std::vector<at::Tensor> Engine::run(const std::string& network, const std::vector<at::Tensor>& inputs) {
  auto it = packages_.find(network);
  if (it == packages_.end()) throw PackageError("the manifest has no package for '" + network + "'");
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(inputs.size());
  for (const auto& t : inputs) contiguous.push_back(t.contiguous());
  return it->second->run(contiguous);
}

static at::Tensor seeded_normal(at::IntArrayRef shape, uint64_t seed, const at::Device& device) {
  // torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).to(device)
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(device);
}

static at::Tensor picture_nchw(const at::Tensor& picture) {
  // uint8 [S, S, 3] -> float32 [1, 3, S, S] in [0, 1]
  TORCH_CHECK(picture.dim() == 3 && picture.size(2) == 3 && picture.scalar_type() == at::kByte,
              "picture must be uint8 [S, S, 3]");
  return picture.unsqueeze(0).permute({0, 3, 1, 2}).to(at::kFloat) / 255.0;
}

at::Tensor Engine::shape_latents(const at::Tensor& picture, uint64_t seed) {
  const int64_t n = manifest_.integer("n_tokens"), d = manifest_.integer("latent_dim");
  at::Tensor noise = seeded_normal({1, n, d}, seed, device_);
  // dinov2.prepare_pixels: bicubic antialiased resize, ImageNet normalisation
  const int64_t r = manifest_.integer("dino_resolution");
  at::Tensor x = picture_nchw(picture.to(device_));
  if (x.size(2) != r || x.size(3) != r) x = at::_upsample_bicubic2d_aa(x, {r, r}, false);
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  at::Tensor mean = at::tensor({0.485f, 0.456f, 0.406f}, f32).view({1, 3, 1, 1});
  at::Tensor std = at::tensor({0.229f, 0.224f, 0.225f}, f32).view({1, 3, 1, 1});
  at::Tensor tokens = run("dinov2", {(x - mean) / std})[0];                              // [1, M, C]
  std::vector<at::Tensor> context = run("meshgen_coarse_context", {tokens});             // k0, v0, ...
  // DDIMVPred.sample: z <- cx_i z + cv_i v(z, t_i), latents fp32 between steps
  at::Tensor z = noise.clone();
  std::vector<at::Tensor> inputs{z, z};
  inputs.insert(inputs.end(), context.begin(), context.end());
  for (int64_t i = 0; i < ddim_.timesteps.size(0); ++i) {
    inputs[0] = z;
    inputs[1] = ddim_.timesteps.narrow(0, i, 1);                                          // [1]
    at::Tensor v = run("meshgen_coarse", inputs)[0];
    z = ddim_.cx.narrow(0, i, 1).view({1, 1, 1}) * z + ddim_.cv.narrow(0, i, 1).view({1, 1, 1}) * v;
  }
  return z;
}

at::Tensor Engine::field(const at::Tensor& latents) {
  std::vector<at::Tensor> kv = run("shape_vae_kv", {latents.to(device_, at::kFloat)});     // k, v
  const int64_t res = manifest_.integer("grid_resolution"), nodes = res + 1;
  const double bound = manifest_.real("bounds");
  // shape_decoding.dense_decode / lattice_points: ij-ordered lattice, idx * (2 b / (n - 1)) - b
  at::Tensor r = at::arange(nodes, at::TensorOptions().dtype(at::kLong).device(device_));
  std::vector<at::Tensor> mesh = at::meshgrid({r, r, r}, "ij");
  at::Tensor idx = at::stack(mesh, -1).reshape({-1, 3});
  at::Tensor points = idx.to(at::kFloat) * (2.0 * bound / static_cast<double>(nodes - 1)) - bound;
  const int64_t batch = manifest_.integer("query_batch"), total = points.size(0);
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < total; s += batch) {
    at::Tensor chunk = points.slice(0, s, std::min(s + batch, total));
    const int64_t pad = batch - chunk.size(0);  // repeat the last point: what topk_attention pads with
    if (pad > 0) chunk = at::cat({chunk, chunk.slice(0, -1).expand({pad, 3})});
    at::Tensor f = run("shape_vae_query", {chunk.unsqueeze(0), kv[0], kv[1]})[0];         // [1, P]
    out.push_back(f[0].slice(0, 0, batch - pad));
  }
  return at::cat(out);
}

at::Tensor Engine::encode(const at::Tensor& image) {
  return run("image_vae_encode", {image.unsqueeze(0)})[0];
}

at::Tensor Engine::texture_latents(const at::Tensor& picture, const at::Tensor& normals,
                                   const at::Tensor& positions, uint64_t seed) {
  const int64_t k = manifest_.integer("num_views"), r = manifest_.integer("view_resolution");
  const int64_t c = manifest_.integer("latent_channels"), h = r / manifest_.integer("latent_downsample");
  TORCH_CHECK(normals.sizes() == at::IntArrayRef({k, r, r, 3}) && positions.sizes() == normals.sizes(),
              "normals and positions must be float32 [K, R, R, 3]");
  // texture_networks._to_vae: [B, H, W, 3] in [0, 1] -> bilinear antialiased resize -> [-1, 1]
  at::Tensor ref = picture_nchw(picture.to(device_));
  if (ref.size(2) != r || ref.size(3) != r) ref = at::_upsample_bilinear2d_aa(ref, {r, r}, false);
  ref = ref * 2.0 - 1.0;
  auto to_vae = [&](const at::Tensor& maps) { return maps.to(device_, at::kFloat).permute({0, 3, 1, 2}) * 2.0 - 1.0; };
  at::Tensor nrm = to_vae(normals), pos = to_vae(positions);
  at::Tensor ref_lat = encode(ref[0]);                                                   // [1, C, h, w]
  std::vector<at::Tensor> geo;
  for (int64_t i = 0; i < k; ++i) geo.push_back(at::cat({encode(nrm[i]), encode(pos[i])}, 1));
  std::vector<at::Tensor> prepared = run("texturegen_prepare", {at::cat(geo).unsqueeze(0)});  // base, kv
  at::Tensor noise = seeded_normal({1, k, c, h, h}, seed, device_);
  // texturegen_sampler.sample_texture_views: pinned reference slot 0, CFG rows [cond; white-reference]
  const bool cfg = manifest_.integer("branches") == 2;
  const double scale = manifest_.real("guidance_scale");
  const int64_t steps = manifest_.integer("texture_steps"), b = 1;
  at::Tensor refs = ref_lat;
  if (cfg) {
    at::Tensor white = encode(at::ones({3, r, r}, ref.options()))[0];                     // [C, h, w]
    refs = at::cat({refs, white.expand({b, c, h, h})});
  }
  const int64_t rows = refs.size(0);
  at::Tensor grid = at::empty({rows, 1 + k, c, h, h}, noise.options());
  std::vector<double> times;
  for (int64_t i = 0; i <= steps; ++i) times.push_back(static_cast<double>(i) / static_cast<double>(steps));
  at::Tensor z = noise.clone();
  std::vector<at::Tensor> inputs{grid, grid};
  inputs.insert(inputs.end(), prepared.begin(), prepared.end());
  for (int64_t s = 0; s < steps; ++s) {
    grid.select(1, 0).copy_(refs);
    grid.slice(0, 0, b).slice(1, 1).copy_(z);
    if (cfg) grid.slice(0, b).slice(1, 1).copy_(z);
    inputs[1] = at::full({rows}, static_cast<float>(times[s]), noise.options());
    at::Tensor vel = run("texturegen", inputs)[0].slice(1, 1);                          // slot 0 ignored
    if (cfg) {
      at::Tensor v_c = vel.slice(0, 0, b), v_u = vel.slice(0, b);
      vel = v_u + scale * (v_c - v_u);
    }
    z.add_(vel, times[s + 1] - times[s]);
  }
  return z;
}

at::Tensor Engine::decode_views(const at::Tensor& latents) {
  std::vector<at::Tensor> views;
  at::Tensor lat = latents.to(device_, at::kFloat);
  for (int64_t i = 0; i < lat.size(1); ++i) views.push_back(run("image_vae_decode", {lat[0][i].unsqueeze(0)})[0]);
  return (at::cat(views) + 1.0) * 0.5;
}

}  // namespace assetgen
