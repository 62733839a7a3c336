"""Allocates CUDA memory in `block_mb` blocks on every frame, keeping every block.

The worker's device memory cap (memory_limit_mb) must stop it with a CUDA out-of-memory
error long before `give_up_mb`; if it ever gets there, it answers normally, so a test that
expects the MemoryError fails saying the cap was not enforced.
"""

import torch


class Plugin:
    def __init__(self, device, config):
        if device != "cuda":
            raise RuntimeError(f"cuda_memory_hog needs CUDA, got device {device!r}")
        self.block_mb = int(config["block_mb"])
        self.give_up_mb = int(config["give_up_mb"])
        self.blocks = []

    def process(self, batch):
        while len(self.blocks) * self.block_mb < self.give_up_mb:
            self.blocks.append(torch.ones(self.block_mb * 2**20, dtype=torch.uint8, device="cuda"))
        torch.cuda.synchronize()
        allocated_mb = len(self.blocks) * self.block_mb
        return [{"tracks": [], "extra": {"allocated_mb": allocated_mb}} for _ in batch]
