"""Building DeepSpeed engines the same way for SFT and for the GRPO learner, on CPU (gloo) or GPUs (nccl)."""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Iterable, Optional

import torch

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port that nothing on this machine listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def set_process_group_env(rank: int, world_size: int, master_addr: str, master_port: int, local_rank: int = 0) -> None:
    """torch.distributed's env:// rendezvous. Without these DeepSpeed looks for MPI and fails on mpi4py."""
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(local_rank),
    )
    # DeepSpeed JIT-compiles a shared-memory comm op on CPU once; keep it next to the environment.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def deepspeed_config(
    zero_stage: int,
    micro_batch_size: int,
    grad_clip: float,
    bf16: bool = False,
    gradient_accumulation_steps: int = 1,
    managed_accumulation: bool = True,
) -> dict:
    """A DeepSpeed config dict. The optimizer is passed as a torch object (DeepSpeed's own AdamW would
    JIT-compile FusedAdam for minutes on CPU)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # False: any number of backward() calls accumulate locally and step() reduces and updates once, so a
        # GRPO batch of any size (groups are filtered per step) is one optimizer step.
        "managed_gradient_accumulation": managed_accumulation,
    }
    if bf16:
        config["bf16"] = {"enabled": True}
    return config


def create_engine(
    model: torch.nn.Module,
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float = 0.0,
    zero_stage: int = 0,
    micro_batch_size: int = 1,
    grad_clip: float = 1.0,
    bf16: bool = False,
    managed_accumulation: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    rank: int = 0,
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: Optional[int] = None,
    lr_lambda=None,
):
    """Wrap `model` in a DeepSpeed engine training `parameters` with AdamW.

    Sets the env:// rendezvous for (rank, world_size) unless a process group already exists.
    lr_lambda: optional step -> learning-rate factor (a LambdaLR that engine.step() advances).
    Returns the engine; call engine.backward(loss) and engine.step(). With `managed_accumulation=False`,
    call backward(loss, scale_wrt_gas=False) any number of times, then step() once.
    """
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        set_process_group_env(rank, world_size, master_addr, master_port or free_port())
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters were given to the DeepSpeed engine")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    config = deepspeed_config(zero_stage, micro_batch_size, grad_clip, bf16, managed_accumulation=managed_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) if lr_lambda is not None else None
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
                                      dist_init_required=True)
    return engine
