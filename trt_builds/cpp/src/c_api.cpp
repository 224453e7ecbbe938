// The C boundary of assetgen.h: every entry point catches everything, records the message in a
// thread-local string and returns a status code.
#include "assetgen.h"

#include <cstring>
#include <string>

#include "runtime.hpp"

struct assetgen_engine {
  assetgen::Engine engine;
};

namespace {

thread_local std::string last_error;

struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct BufferError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename F>
assetgen_status guarded(F&& body) {
  try {
    last_error.clear();
    body();
    return ASSETGEN_OK;
  } catch (const ArgumentError& e) {
    last_error = e.what();
    return ASSETGEN_INVALID_ARGUMENT;
  } catch (const BufferError& e) {
    last_error = e.what();
    return ASSETGEN_BUFFER_TOO_SMALL;
  } catch (const assetgen::PackageError& e) {
    last_error = e.what();
    return ASSETGEN_PACKAGE_ERROR;
  } catch (const std::exception& e) {
    last_error = e.what();
    return ASSETGEN_RUNTIME_ERROR;
  } catch (...) {
    last_error = "unknown error";
    return ASSETGEN_RUNTIME_ERROR;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw ArgumentError(what);
}

void copy_out(const at::Tensor& t, float* out, size_t len, const char* what) {
  at::Tensor host = t.to(at::kCPU, at::kFloat).contiguous();
  if (static_cast<size_t>(host.numel()) > len)
    throw BufferError(std::string(what) + " needs " + std::to_string(host.numel()) + " floats, got " +
                      std::to_string(len));
  std::memcpy(out, host.data_ptr<float>(), host.numel() * sizeof(float));
}

at::Tensor picture_tensor(const uint8_t* picture, int size) {
  require(picture != nullptr && size > 0, "picture must be a non-null uint8 [S, S, 3] buffer with S > 0");
  return at::from_blob(const_cast<uint8_t*>(picture), {size, size, 3}, at::kByte).clone();
}

}  // namespace

extern "C" {

assetgen_status assetgen_create(const char* packages, const char* device, assetgen_engine** out) {
  return guarded([&] {
    require(packages != nullptr && out != nullptr, "packages and out must not be null");
    *out = nullptr;
    std::string dev = device ? device : "cpu";
    try {
      at::Device check(dev);
      (void)check;
    } catch (const std::exception&) {
      throw ArgumentError("bad device string '" + dev + "' (use cpu or cuda:0)");
    }
    *out = new assetgen_engine{assetgen::Engine(packages, dev)};
  });
}

assetgen_status assetgen_get_info(const assetgen_engine* engine, assetgen_info* out) {
  return guarded([&] {
    require(engine != nullptr && out != nullptr, "engine and out must not be null");
    const auto& m = engine->engine.manifest();
    int view = static_cast<int>(m.integer("view_resolution"));
    *out = assetgen_info{static_cast<int>(m.integer("n_tokens")), static_cast<int>(m.integer("latent_dim")),
                         static_cast<int>(m.integer("grid_resolution")), static_cast<float>(m.real("bounds")),
                         static_cast<int>(m.integer("num_views")), view,
                         static_cast<int>(m.integer("latent_channels")),
                         view / static_cast<int>(m.integer("latent_downsample")),
                         static_cast<int>(m.integer("coarse_steps")), static_cast<int>(m.integer("texture_steps")),
                         static_cast<int>(m.integer("branches"))};
  });
}

assetgen_status assetgen_run_shape(assetgen_engine* engine, const uint8_t* picture, int size, uint64_t seed,
                                   float* latents_out, size_t latents_len, float* field_out, size_t field_len) {
  return guarded([&] {
    require(engine != nullptr && latents_out != nullptr, "engine and latents_out must not be null");
    at::Tensor latents = engine->engine.shape_latents(picture_tensor(picture, size), seed);
    copy_out(latents, latents_out, latents_len, "latents_out");
    if (field_out != nullptr) copy_out(engine->engine.field(latents), field_out, field_len, "field_out");
  });
}

assetgen_status assetgen_run_texture(assetgen_engine* engine, const uint8_t* picture, int size,
                                     const float* normals, const float* positions, uint64_t seed,
                                     float* views_out, size_t views_len, float* latents_out, size_t latents_len) {
  return guarded([&] {
    require(engine != nullptr && normals != nullptr && positions != nullptr && views_out != nullptr,
            "engine, normals, positions and views_out must not be null");
    const auto& m = engine->engine.manifest();
    const int64_t k = m.integer("num_views"), r = m.integer("view_resolution");
    at::Tensor nrm = at::from_blob(const_cast<float*>(normals), {k, r, r, 3}, at::kFloat).clone();
    at::Tensor pos = at::from_blob(const_cast<float*>(positions), {k, r, r, 3}, at::kFloat).clone();
    at::Tensor latents = engine->engine.texture_latents(picture_tensor(picture, size), nrm, pos, seed);
    if (latents_out != nullptr) copy_out(latents, latents_out, latents_len, "latents_out");
    copy_out(engine->engine.decode_views(latents), views_out, views_len, "views_out");
  });
}

void assetgen_free(assetgen_engine* engine) { delete engine; }

const char* assetgen_last_error(void) { return last_error.c_str(); }

const char* assetgen_status_name(assetgen_status status) {
  switch (status) {
    case ASSETGEN_OK: return "ok";
    case ASSETGEN_INVALID_ARGUMENT: return "invalid argument";
    case ASSETGEN_PACKAGE_ERROR: return "package error";
    case ASSETGEN_RUNTIME_ERROR: return "runtime error";
    case ASSETGEN_BUFFER_TOO_SMALL: return "buffer too small";
  }
  return "unknown status";
}

}  // extern "C"
