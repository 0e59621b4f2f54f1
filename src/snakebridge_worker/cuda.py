"""CUDA tensors between processes on one device, by CUDA IPC handle (no trip through host memory).

torch's own IPC machinery does the work (``torch.multiprocessing.reductions``): the sender's
allocation stays alive, held by torch, until every receiver has dropped its tensor. Objects of
other frameworks that speak DLPack on CUDA (cupy, …) travel as a torch view of their memory and
are rebuilt with the same framework on the other side. Both sides need torch with CUDA.
"""

from __future__ import annotations

from typing import Any, Dict, List


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ValueError(
            "a CUDA tensor crossed but torch is not installed on this side; install torch with "
            "CUDA in both environments (or send tensor.cpu())"
        ) from None
    return torch


def export(obj: Any) -> Dict[str, Any]:
    """The IPC description of a CUDA tensor (or any DLPack object on CUDA)."""
    torch = _torch()
    framework = "torch"
    tensor = obj
    if not isinstance(obj, torch.Tensor):
        framework = type(obj).__module__.split(".")[0]
        tensor = torch.from_dlpack(obj)
    from torch.multiprocessing.reductions import reduce_tensor

    _, args = reduce_tensor(tensor)
    (
        _cls,
        size,
        stride,
        offset,
        storage_cls,
        dtype,
        device,
        handle,
        storage_bytes,
        storage_offset,
        requires_grad,
        counter_handle,
        counter_offset,
        event_handle,
        event_sync,
    ) = args
    return {
        "framework": framework,
        "size": list(size),
        "stride": list(stride),
        "offset": int(offset),
        "storage": f"{storage_cls.__module__}.{storage_cls.__qualname__}",
        "dtype": str(dtype).replace("torch.", ""),
        "device": int(device),
        "handle": bytes(handle),
        "storage_bytes": int(storage_bytes),
        "storage_offset": int(storage_offset),
        "requires_grad": bool(requires_grad),
        "counter_handle": bytes(counter_handle),
        "counter_offset": int(counter_offset),
        "event_handle": bytes(event_handle) if event_handle is not None else None,
        "event_sync": bool(event_sync),
    }


def _storage_class(torch: Any, name: str) -> Any:
    allowed = {"torch.storage.TypedStorage", "torch.storage.UntypedStorage", "torch.UntypedStorage"}
    if name not in allowed:
        raise ValueError(f"unexpected CUDA storage class {name!r}")
    return torch.UntypedStorage if name.endswith("UntypedStorage") else torch.TypedStorage


def rebuild(spec: Dict[str, Any]) -> Any:
    """The tensor (or DLPack object of the sender's framework) an :func:`export` describes."""
    torch = _torch()
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    dtype = getattr(torch, str(spec["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {spec['dtype']!r}")
    size: List[int] = spec["size"]
    tensor = rebuild_cuda_tensor(
        torch.Tensor,
        torch.Size(size),
        tuple(spec["stride"]),
        int(spec["offset"]),
        _storage_class(torch, str(spec["storage"])),
        dtype,
        int(spec["device"]),
        spec["handle"],
        int(spec["storage_bytes"]),
        int(spec["storage_offset"]),
        bool(spec["requires_grad"]),
        spec["counter_handle"],
        int(spec["counter_offset"]),
        spec["event_handle"],
        bool(spec["event_sync"]),
    )
    framework = spec.get("framework", "torch")
    if framework == "torch":
        return tensor
    if framework == "cupy":
        import cupy

        return cupy.from_dlpack(tensor)
    return tensor
