"""Band UDF and exact EDT (triton_kernels/udf_band.py) against their references, in the CUDA simulator
in CI."""

from __future__ import annotations

import numpy as np
import torch
from test_gpu_watertight import _box

from engine.geometry.watertight import _normalise
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.udf_band import edt_to_mask, edt_to_mask_ref, udf_band, udf_band_ref


def test_udf_band_and_edt_match_references():
    mesh = _box(0.5)
    mesh.faces[::3] = mesh.faces[::3, ::-1]
    _, _, verts = _normalise(mesh, 10, 0.87)
    dev = kernel_device()
    udf = udf_band(torch.from_numpy(verts).to(dev), torch.from_numpy(mesh.faces.astype(np.int32)).to(dev),
                   11, 2.87).cpu().numpy()
    ref = udf_band_ref(verts, mesh.faces, 11, 2.87)
    # Distances exactly at the band radius may fall on either side of the cut on a GPU (fused multiply-add
    # rounds differently): the band membership must agree everywhere else.
    both = np.isfinite(udf) & np.isfinite(ref)
    differ = np.isinf(udf) != np.isinf(ref)
    at_cut = np.abs(np.where(np.isfinite(udf), udf, ref) - 2.87) < 1e-5
    assert (at_cut | ~differ).all(), f"{int((differ & ~at_cut).sum())} nodes differ in band membership"
    np.testing.assert_allclose(udf[both], ref[both], rtol=0, atol=1e-6)
    band = ref < 0.87
    np.testing.assert_array_equal(edt_to_mask(torch.from_numpy(band).to(dev)).cpu().numpy(),
                                  edt_to_mask_ref(band))
