/* Example host, in plain C against assetgen.h: a shape (latents + SDF grid) and texture views from a
 * folder of AOTInductor packages.
 *
 *   assetgen_host PACKAGES PICTURE.u8 SIZE NORMALS.f32 POSITIONS.f32 SEED OUT_DIR [DEVICE [REPEATS]]
 *
 * PICTURE.u8: raw uint8 [SIZE, SIZE, 3] RGB on white; NORMALS.f32 / POSITIONS.f32: raw float32
 * [K, R, R, 3] condition maps in [0, 1] (the Python engine renders them: engine/texture/render_conditions.py).
 * DEVICE: "cpu" (default) or "cuda:0", the device the packages were compiled for. REPEATS (default 1):
 * the shape and texture calls run that many times on the same inputs (the first run warms up), each run's
 * wall time printed as "run I: shape S s, texture T s, chain C s" (benchmarks/models/exports.py reads it).
 * Writes raw float32 files to OUT_DIR: latents.f32 [N, D], field.f32 [(G+1)^3], view_latents.f32
 * [K, C, h, h], views.f32 [K, 3, R, R] (of the last run); prints the timings. Marching cubes on field.f32
 * and fusing the views into a texture are the Python engine's stages (engine/geometry, engine/texture).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "assetgen.h"

static void* read_file(const char* path, size_t bytes) {
  FILE* f = fopen(path, "rb");
  void* data = malloc(bytes);
  if (!f || !data || fread(data, 1, bytes, f) != bytes) {
    fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path);
    exit(2);
  }
  fclose(f);
  return data;
}

static void write_file(const char* dir, const char* name, const float* data, size_t count) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "wb");
  if (!f || fwrite(data, sizeof(float), count, f) != count) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
  fclose(f);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void check(assetgen_status status, const char* what) {
  if (status != ASSETGEN_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, assetgen_status_name(status), assetgen_last_error());
    exit(1);
  }
}

int main(int argc, char** argv) {
  if (argc < 8 || argc > 10) {
    fprintf(stderr, "usage: %s PACKAGES PICTURE.u8 SIZE NORMALS.f32 POSITIONS.f32 SEED OUT_DIR "
            "[DEVICE [REPEATS]]\n", argv[0]);
    return 2;
  }
  const int size = atoi(argv[3]);
  const uint64_t seed = strtoull(argv[6], NULL, 10);
  const char* out = argv[7];
  const char* device = argc > 8 ? argv[8] : "cpu";
  const int repeats = argc > 9 ? atoi(argv[9]) : 1;
  if (repeats < 1) {
    fprintf(stderr, "REPEATS must be >= 1\n");
    return 2;
  }
  double t0 = now();
  assetgen_engine* engine = NULL;
  check(assetgen_create(argv[1], device, &engine), "assetgen_create");
  assetgen_info info;
  check(assetgen_get_info(engine, &info), "assetgen_get_info");
  double t1 = now();

  const size_t n_lat = (size_t)info.n_tokens * info.latent_dim;
  const size_t nodes = (size_t)info.grid_resolution + 1, n_field = nodes * nodes * nodes;
  const size_t n_maps = (size_t)info.num_views * info.view_resolution * info.view_resolution * 3;
  const size_t n_vlat = (size_t)info.num_views * info.latent_channels * info.latent_size * info.latent_size;
  uint8_t* picture = read_file(argv[2], (size_t)size * size * 3);
  float* normals = read_file(argv[4], n_maps * sizeof(float));
  float* positions = read_file(argv[5], n_maps * sizeof(float));
  float* latents = malloc(n_lat * sizeof(float));
  float* field = malloc(n_field * sizeof(float));
  float* views = malloc(n_maps * sizeof(float));
  float* view_latents = malloc(n_vlat * sizeof(float));

  double shape_s = 0.0, texture_s = 0.0;  /* of the first run */
  for (int run = 0; run < repeats; ++run) {
    double a = now();
    check(assetgen_run_shape(engine, picture, size, seed, latents, n_lat, field, n_field),
          "assetgen_run_shape");
    double b = now();
    check(assetgen_run_texture(engine, picture, size, normals, positions, seed, views, n_maps, view_latents,
                               n_vlat), "assetgen_run_texture");
    double c = now();
    if (run == 0) shape_s = b - a, texture_s = c - b;
    if (repeats > 1) printf("run %d: shape %.6f s, texture %.6f s, chain %.6f s\n", run, b - a, c - b, c - a);
  }

  write_file(out, "latents.f32", latents, n_lat);
  write_file(out, "field.f32", field, n_field);
  write_file(out, "view_latents.f32", view_latents, n_vlat);
  write_file(out, "views.f32", views, n_maps);
  printf("load %.3f s, shape (%d DDIM steps + %zu^3 field) %.3f s, texture (%d views, %d flow steps, %d "
         "branches) %.3f s\n", t1 - t0, info.coarse_steps, nodes, shape_s, info.num_views,
         info.texture_steps, info.guidance_branches, texture_s);

  assetgen_status bad = assetgen_run_shape(engine, NULL, 0, seed, latents, n_lat, NULL, 0);
  printf("error path: %s (%s)\n", assetgen_status_name(bad), assetgen_last_error());
  assetgen_free(engine);
  free(picture), free(normals), free(positions), free(latents), free(field), free(views), free(view_latents);
  return bad == ASSETGEN_INVALID_ARGUMENT ? 0 : 1;
}
