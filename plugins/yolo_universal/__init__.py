"""The YOLO universal landmark detector (Zhu et al., MICCAI 2021, "GU2Net") and its head."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_backbones(register):
    register("yolo-universal", "lmbench_plugins.yolo_universal.backbone:YoloUniversal")


@hookimpl
def lmbench_register_heads(register):
    register("gaussian-bce", "lmbench_plugins.yolo_universal.head:GaussianBceHead")
