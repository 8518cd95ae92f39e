"""A stand-in accelerator for machines without one: meta tensors, with every host read recorded.

A model and inputs moved to the ``meta`` device behave, for what these tests check, as on a GPU:

- an op that mixes them with a CPU tensor (other than a 0-d one) fails with torch's own "not on the expected
  device" error, as it does with CUDA and CPU tensors;
- a host read of their data (``.item()``, ``bool(t)``, ``.tolist()``, a boolean index, a copy to the CPU)
  would synchronise with a GPU. Meta tensors hold no data, so :class:`MetaDevice` records each read, with
  where it happened, and lets the code go on (reads of booleans give ``True``, so checks pass).

Shapes, dtypes and devices are computed by torch's meta kernels: the same code paths as on a GPU, without
running them. What it cannot show: numerical results, and code that draws random numbers with a
``torch.Generator`` on the input's device (a meta generator does not exist); the CUDA tests cover those.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import torch
from torch.fx.experimental import _config as fx_config
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

_A = torch.ops.aten
_READS = {_A._local_scalar_dense.default, _A.nonzero.default, _A.is_nonzero.default, _A.equal.default}
_MASKED = {_A.index.Tensor, _A.index_put.default, _A.index_put_.default}


@dataclass
class HostRead:
    """One read of accelerator data by the host: the op and the innermost package lines that caused it."""

    op: str
    where: list[str]


class MetaDevice(TorchDispatchMode):
    """Records host reads of meta tensors (see the module docstring) while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[HostRead] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if not any(t.is_meta for t in tensors):
            return func(*args, **kwargs)
        to_host = func is _A._to_copy.default and getattr(kwargs.get("device"), "type", None) == "cpu"
        masked = func in _MASKED and any(t.dtype == torch.bool for t in tensors[1:])
        if masked:  # a boolean index counts its entries on the host: recorded, then shaped as if all were kept
            self._record(func)
            with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
                return func(*args, **kwargs)
        if func not in _READS and not to_host:
            return func(*args, **kwargs)
        self._record(func)
        if func is _A._local_scalar_dense.default:
            return True if args[0].dtype == torch.bool else 1
        if func is _A.nonzero.default:
            return torch.zeros(0, args[0].dim(), dtype=torch.long, device="meta")
        if func is _A.equal.default:
            return True
        return torch.ones(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)

    def _record(self, func) -> None:
        stack = [f for f in traceback.extract_stack() if "captum_gradeclip" in f.filename]
        self.reads.append(
            HostRead(str(func), [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in stack])
        )
