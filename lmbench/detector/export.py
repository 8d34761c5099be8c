"""A saved detector as one ONNX file, for pipelines without PyTorch (``lmbench export``).

The graph is what ``lmbench predict`` computes up to the heatmaps: a grayscale image at its
own size in, resized and min-max scaled as lmbench does, through the network, logits out.
Its metadata (``lmbench.deploy.METADATA_KEY``) holds, as JSON, the landmark names, the input
size, the normalisation, the head's decoding rule with its calibrated settings, and the run
it came from; ``lmbench.deploy.OnnxDetector`` reads it back.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmbench.core.errors import LmbenchError
from lmbench.deploy import METADATA_KEY
from lmbench.detector.saved import Detector

OPSET = 18  # the first with an antialiased Resize
NORMALISATION = ("one grayscale image, float32 (B, 1, H, W), any size and intensity range; in the graph: "
                 "bilinear resize with antialiasing to input_size x input_size (aspect ignored), then min-max "
                 "scaling of each image to [0, 1]")
RUN_FIELDS = ("run_key", "dataset", "dataset_label", "pretrainer_label", "backbone_label", "head_label",
              "labels", "seed")
EXTERNAL_DATA_BYTES = 1 << 30  # protobuf files stop at 2 GiB: larger weights go beside the graph


class ResizedInput(nn.Module):
    """``model`` on images of any size: ``lmbench.data.geometry.resize_image`` in tensor ops."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, image):
        x = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        return self.model(torch.where(high > low, (x - low) / (high - low).clamp_min(1e-30), torch.zeros_like(x)))


def export_onnx(detector: Detector, out: Path) -> Path:
    """Write ``detector`` to ``out`` (atomically); weights over 1 GiB go to ``out`` + ``.data``."""
    try:
        import onnx
    except ImportError:
        raise LmbenchError("lmbench export needs onnx and onnxscript: pip install 'lmbench[export]'") from None
    run, head = detector.run, detector.head
    if not head.fine_tunes:
        raise LmbenchError(f"run {run['run_key']}: head {run['head_label']!r} matches features coarse to fine on "
                           f"each image's own pixels, which one ONNX graph does not hold; lmbench predict runs it")
    decoding = head.exported_decoding()
    if decoding is None:
        raise LmbenchError(f"run {run['run_key']}: head {run['head_label']!r} ({type(head).__name__}) has no "
                           f"decoding outside PyTorch (HeadStrategy.exported_decoding), so it cannot be exported")
    graph = ResizedInput(detector.model.cpu().float().eval(), detector.image_size)
    size = detector.image_size
    example = torch.rand(2, 1, size + 37, size + 11)  # a batch and a size no dimension is specialised to
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=2),
            3: torch.export.Dim("width", min=2)}
    metadata = {
        "format": 1, "landmark_names": detector.landmark_names, "input_size": size,
        "normalisation": NORMALISATION, "decoding": decoding,
        "run": {field: run[field] for field in RUN_FIELDS},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(graph, (example,), input_names=["image"], output_names=["logits"],
                                    dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True, verbose=False)
        model = program.model_proto
        model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
        external = sum(p.numel() * 4 for p in graph.parameters()) > EXTERNAL_DATA_BYTES
        staged = Path(scratch) / out.name
        onnx.save_model(model, staged, save_as_external_data=external, location=f"{out.name}.data")
        if external:
            os.replace(Path(scratch) / f"{out.name}.data", out.with_name(f"{out.name}.data"))
        os.replace(staged, out)
    return out
