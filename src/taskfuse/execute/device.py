"""Which torch device does the arithmetic: checked before planning, so a typo fails at once."""
from __future__ import annotations

import torch

from ..errors import DeviceError

SUPPORTED = ("cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"--device {name!r} is not a torch device. Fix: use cpu, cuda or cuda:N.") from e
    if device.type not in SUPPORTED:
        raise DeviceError(f"--device {name!r}: taskfuse computes on {' or '.join(SUPPORTED)} only. Fix: use cpu, "
                          "cuda or cuda:N.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise DeviceError(f"--device {name!r}: this torch ({torch.__version__}) {build}. Fix: use --device cpu, "
                              "or install a CUDA build of torch on a machine with an NVIDIA GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name!r}: there are only {torch.cuda.device_count()} GPU(s). Fix: use "
                              f"cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    return device
