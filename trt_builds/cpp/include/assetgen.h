/* AssetGen C API: the network part of the pipeline (picture -> shape latents and SDF grid, picture +
 * condition maps -> texture views) from AOTInductor packages built by `python -m trt_builds.aoti`.
 *
 * Lifecycle: assetgen_create (load every package of one bucket) -> assetgen_run_shape /
 * assetgen_run_texture (any number of times; one call at a time per engine) -> assetgen_free.
 * Errors: every function returns an assetgen_status; on failure assetgen_last_error() gives the
 * message (thread-local, valid until the next API call on that thread). No C++ exception crosses
 * this boundary. Geometry (marching cubes on the field, rendering the condition maps, fusing the views
 * into a texture) is the host's: the Python engine's stages do it today.
 *
 * Layouts (row-major, float32 unless said):
 *   picture     uint8 [S, S, 3] RGB composited on white (any S; resized like the engine does)
 *   latents     [N, D]                       MeshGen coarse latents (info.n_tokens, info.latent_dim)
 *   field       [G+1, G+1, G+1]              SDF on the lattice over [-bounds, bounds]^3, x slowest,
 *                                            negative inside (G = info.grid_resolution)
 *   normals,    [K, R, R, 3] in [0, 1]       rendered world normals * 0.5 + 0.5 (white background) and
 *   positions                                positions * 0.5 + 0.5 (0.5 background), K = info.num_views,
 *                                            R = info.view_resolution, rig order of engine/texture/views.py
 *   views       [K, 3, R, R] in [0, 1]       decoded views
 *   view latents [K, C, h, w]                (C = info.latent_channels, h = w = info.latent_size)
 * Noise is drawn from the seed exactly as the Python engine draws it (torch's CPU generator).
 */
#ifndef ASSETGEN_H
#define ASSETGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define ASSETGEN_API __declspec(dllexport)
#else
#define ASSETGEN_API __attribute__((visibility("default")))
#endif

typedef struct assetgen_engine assetgen_engine;

typedef enum assetgen_status {
  ASSETGEN_OK = 0,
  ASSETGEN_INVALID_ARGUMENT = 1, /* null pointer, wrong size, bad device string */
  ASSETGEN_PACKAGE_ERROR = 2,    /* manifest or package missing / unreadable / incompatible */
  ASSETGEN_RUNTIME_ERROR = 3,    /* a network or tensor operation failed */
  ASSETGEN_BUFFER_TOO_SMALL = 4  /* an output buffer is shorter than the info says */
} assetgen_status;

typedef struct assetgen_info {
  int n_tokens, latent_dim;          /* shape latents [N, D] */
  int grid_resolution;               /* field has (G+1)^3 values */
  float bounds;                      /* the lattice spans [-bounds, bounds]^3 */
  int num_views, view_resolution;    /* K, R */
  int latent_channels, latent_size;  /* view latents [K, C, h, h] */
  int coarse_steps, texture_steps, guidance_branches;
} assetgen_info;

/* packages: a .manifest file, or a folder holding exactly one. device: "cpu" or "cuda[:i]" (the
 * device the packages were compiled for). */
ASSETGEN_API assetgen_status assetgen_create(const char* packages, const char* device, assetgen_engine** out);
ASSETGEN_API assetgen_status assetgen_get_info(const assetgen_engine* engine, assetgen_info* out);
/* latents_out: n_tokens * latent_dim floats; field_out: (G+1)^3 floats, or NULL to skip decoding. */
ASSETGEN_API assetgen_status assetgen_run_shape(assetgen_engine* engine, const uint8_t* picture, int size,
                                                uint64_t seed, float* latents_out, size_t latents_len,
                                                float* field_out, size_t field_len);
/* views_out: K * 3 * R * R floats; latents_out: K * C * h * h floats or NULL. */
ASSETGEN_API assetgen_status assetgen_run_texture(assetgen_engine* engine, const uint8_t* picture, int size,
                                                  const float* normals, const float* positions, uint64_t seed,
                                                  float* views_out, size_t views_len, float* latents_out,
                                                  size_t latents_len);
ASSETGEN_API void assetgen_free(assetgen_engine* engine);
ASSETGEN_API const char* assetgen_last_error(void);
ASSETGEN_API const char* assetgen_status_name(assetgen_status status);

#ifdef __cplusplus
}
#endif
#endif /* ASSETGEN_H */
