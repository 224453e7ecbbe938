"""Previews and an HTML report of a finished asset (``assetgen generate/process ... --preview DIR``).

``write_preview(result, glb_path, folder, config)`` (``preview.py``) writes turntable frames and a contact
sheet rendered by the engine's own CPU rasteriser (``render.py``: base colour, tangent-space normal map,
Lambert light), the UV layout (``uv_layout.py``), a wireframe, and ``report.html`` (``html_report.py``)
with the latency breakdown as inline SVG (``latency_chart.py``), the asset contract, the run's notes and
an offline three.js viewer of the GLB (``viewer.py``, three.js vendored under ``vendor/three``, MIT).
"""

from engine.report.config import PreviewConfig as PreviewConfig
from engine.report.preview import PreviewFiles as PreviewFiles
from engine.report.preview import check_preview_root as check_preview_root
from engine.report.preview import preview_folder as preview_folder
from engine.report.preview import write_preview as write_preview
