"""Building DeepSpeed engines the same way for SFT and for the GRPO learner, on CPU (gloo) or GPUs (nccl).

Precision: DeepSpeed's own `bf16` mode casts EVERY parameter of the module it wraps, so it would also cast
the policy's flow expert, whose flow and log-probabilities must stay fp32. `create_engine(bf16=True)`
therefore never enables that mode: it casts the parameters itself (bf16 everywhere except the modules the
model names in `fp32_modules()`, which are held in fp32), gives DeepSpeed one optimizer parameter group per
dtype, and runs DeepSpeed in its fp32 mode. ZeRO stages 1 and 2 keep fp32 master partitions of every
trained parameter, bf16 ones included, so a bf16 parameter is updated from an fp32 master (checked on CPU
with gloo); ZeRO stage 0 would update bf16 parameters in bf16 and is refused for them.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Iterable, Optional, Sequence

import torch

from rl.process_group import bind_rendezvous, free_port, init_default_group  # noqa: F401 (free_port re-exported)

logger = logging.getLogger(__name__)


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


def held_in_fp32(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules `model` keeps in fp32 under bf16 training (its `fp32_modules()`, none without one)."""
    named = getattr(model, "fp32_modules", None)
    return list(named()) if callable(named) else []


def apply_precision(model: torch.nn.Module, bf16: bool, fp32_modules: Sequence[torch.nn.Module] = ()) -> None:
    """Cast `model`'s floating parameters in place: bf16 (when `bf16`) except those of `fp32_modules`, which
    are cast to fp32 whatever the rest. Buffers keep their dtype. Parameters stay the same objects (an
    optimizer built on them before still holds them)."""
    keep = {id(p) for m in fp32_modules for p in m.parameters()}
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point():
                continue
            dtype = torch.float32 if id(p) in keep else (torch.bfloat16 if bf16 else p.dtype)
            if p.dtype != dtype:
                p.data = p.data.to(dtype)


def param_groups_by_dtype(params: Sequence[torch.nn.Parameter]) -> list[dict]:
    """One optimizer parameter group per dtype (ZeRO flattens each group into one buffer of one dtype)."""
    groups: dict[torch.dtype, list] = {}
    for p in params:
        groups.setdefault(p.dtype, []).append(p)
    return [{"params": ps} for _, ps in sorted(groups.items(), key=lambda kv: str(kv[0]))]


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
    listen_socket: Optional[socket.socket] = None,
    fp32_modules: Optional[Sequence[torch.nn.Module]] = None,
    own_lr: Sequence[tuple[Sequence[torch.nn.Parameter], float]] = (),
):
    """Wrap `model` in a DeepSpeed engine training `parameters` with AdamW.

    Joins (rank, world_size) at master_addr:master_port unless a process group already exists; the rendezvous
    listens on master_addr only (rl/process_group.py). Rank 0 serves it on `listen_socket` when given (bound
    with `bind_rendezvous(master_addr)` before the port was handed out), else on a socket it binds itself.
    lr_lambda: optional step -> learning-rate factor (a LambdaLR that engine.step() advances).
    bf16: cast the model to bf16 except `fp32_modules` (default: the model's `fp32_modules()`, e.g. the
    policy's flow expert), which stay fp32 (see the module docstring). ZeRO stage 3 needs one dtype for all
    trained parameters and is refused when they are mixed.
    own_lr: (parameters, learning rate) pairs: parameters of `parameters` trained at a learning rate of their own
    (each its own optimizer groups, per dtype).
    Returns the engine; call engine.backward(loss) and engine.step(). With `managed_accumulation=False`,
    call backward(loss, scale_wrt_gas=False) any number of times, then step() once.
    """
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        from deepspeed.accelerator import get_accelerator

        if master_port is None:
            if rank != 0:
                raise ValueError("master_port is needed for ranks other than 0")
            listen_socket = listen_socket or bind_rendezvous(master_addr)
            master_port = listen_socket.getsockname()[1]
        # DeepSpeed still reads these (without them it looks for MPI), but finds the group already made.
        set_process_group_env(rank, world_size, master_addr, master_port)
        init_default_group(get_accelerator().communication_backend_name(), rank, world_size, master_addr, master_port,
                           listen_socket if rank == 0 else None)
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters were given to the DeepSpeed engine")
    apply_precision(model, bf16, held_in_fp32(model) if fp32_modules is None else fp32_modules)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params})
    if zero_stage == 0 and any(p.dtype in (torch.bfloat16, torch.float16) for p in params):
        raise ValueError(f"zero_stage=0 would update {dtypes} parameters without fp32 master weights: use ZeRO "
                         "stage 1 or 2 for bf16 training (learner.zero_stage / sft.zero_stage)")
    if zero_stage == 3 and len(dtypes) > 1:
        raise ValueError(f"zero_stage=3 needs one dtype for every trained parameter, got {dtypes} (bf16 with an "
                         "fp32 flow expert): use ZeRO stage 1 or 2 (learner.zero_stage / sft.zero_stage)")
    special = {id(p): group_lr for ps, group_lr in own_lr for p in ps if p.requires_grad}
    groups = param_groups_by_dtype([p for p in params if id(p) not in special])
    for group_lr in dict.fromkeys(special.values()):
        groups += [{**g, "lr": group_lr}
                   for g in param_groups_by_dtype([p for p in params if special.get(id(p)) == group_lr])]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay, betas=betas)
    # DeepSpeed's bf16 mode would re-cast the fp32 modules: the cast above is the whole precision setup.
    config = deepspeed_config(zero_stage, micro_batch_size, grad_clip, False, managed_accumulation=managed_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) if lr_lambda is not None else None
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
                                      dist_init_required=True)
    return engine
