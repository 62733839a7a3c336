"""Breaks on a frame with a live CUDA context, in the way config `fault` names.

- illegal_address: a kernel reads address 0x10 (jiterator compiles it with NVRTC at run time):
  "CUDA error: an illegal memory access was encountered", a sticky error that poisons the context.
- device_assert: an index past the end of a CUDA tensor trips torch's device-side assert.
- segfault: the process dereferences NULL while holding a CUDA context.
"""

import ctypes

import torch

FAULTS = ("illegal_address", "device_assert", "segfault")


class Plugin:
    def __init__(self, device, config):
        if device != "cuda":
            raise RuntimeError(f"cuda_fault needs CUDA, got device {device!r}")
        self.fault = config["fault"]
        if self.fault not in FAULTS:
            raise ValueError(f"config fault must be one of {FAULTS}, got {self.fault!r}")
        self.values = torch.zeros(4, device="cuda")  # the context exists before the fault
        torch.cuda.synchronize()

    def process(self, batch):
        if self.fault == "illegal_address":
            from torch.cuda import jiterator

            read_bad_address = jiterator._create_jit_fn(
                "template <typename T> T read_bad_address(T x) { return x + *reinterpret_cast<volatile T*>(0x10); }"
            )
            read_bad_address(self.values)
        elif self.fault == "device_assert":
            self.values[torch.tensor([1 << 20], device="cuda")] += 1
        else:
            ctypes.string_at(0)
        torch.cuda.synchronize()  # kernels run asynchronously: the error surfaces here
        return [{"tracks": []} for _ in batch]
