"""Print the build information a bug report needs: ``python -m d2ext.utils.collect_env``."""

import importlib
import sys

from tabulate import tabulate


def collect_env_info() -> str:
    import torch

    rows = [("sys.platform", sys.platform), ("Python", sys.version.replace("\n", " "))]
    try:
        import detectron2

        rows.append(("detectron2", f"{detectron2.__version__} @ {detectron2.__file__}"))
    except ImportError as e:
        rows.append(("detectron2", f"NOT FOUND ({e})"))
    import d2ext
    from d2ext.layers import cuda_built, extension_available

    rows.append(("d2ext", f"{d2ext.__version__} @ {d2ext.__file__}"))
    if extension_available():
        mod = importlib.import_module("d2ext._C")
        rows.append(("d2ext._C", f"loaded @ {mod.__file__}"))
        rows.append(("d2ext._C built with CUDA", cuda_built()))
    else:
        rows.append(("d2ext._C", "not built / not loadable: pure-torch fallback in use"))
    rows.append(("PyTorch", f"{torch.__version__} @ {torch.__file__}"))
    rows.append(("PyTorch CUDA", torch.version.cuda))
    rows.append(("CUDA available", torch.cuda.is_available()))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    from torch.utils.cpp_extension import CUDA_HOME

    rows.append(("CUDA_HOME", CUDA_HOME))
    try:
        import torchvision

        rows.append(("torchvision", f"{torchvision.__version__} @ {torchvision.__file__}"))
    except ImportError:
        rows.append(("torchvision", "NOT FOUND"))
    for name in ("numpy", "fvcore", "pycocotools", "panopticapi", "faster_coco_eval", "cv2"):
        try:
            mod = importlib.import_module(name)
            rows.append((name, getattr(mod, "__version__", "installed")))
        except ImportError:
            rows.append((name, "NOT FOUND"))
    return tabulate(rows)


if __name__ == "__main__":
    print(collect_env_info())
