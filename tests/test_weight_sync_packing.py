"""Weight packing is bit-exact for every dtype, and a mismatched model is refused."""
import pytest
import torch

from actors.weight_sync import load_into_module, pack_buckets, plan_buckets, resolve_backend, unpack_buckets


def test_pack_unpack_is_bit_identical_across_buckets_and_dtypes():
    named = {
        "a.weight": torch.randn(5, 3),
        "b.bias": torch.randn(7, dtype=torch.float64),
        "c.half": torch.randn(4, 4).to(torch.bfloat16),
        "d.int": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    manifest = plan_buckets(named, version=4, bucket_bytes=64)
    assert len(manifest.bucket_sizes) > 1 and manifest.version == 4
    assert manifest.num_bytes == sum(t.numel() * t.element_size() for t in named.values())
    buckets = [b.numpy() for b in pack_buckets(named, manifest)]
    restored = unpack_buckets(buckets, manifest)
    for name, tensor in named.items():
        assert restored[name].dtype == tensor.dtype
        assert torch.equal(restored[name].view(torch.uint8), tensor.view(torch.uint8)), name


def test_loading_weights_into_a_module_checks_names_and_shapes():
    module = torch.nn.Linear(3, 2)
    new = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
    load_into_module(module, new)
    assert torch.equal(module.weight, torch.ones(2, 3))
    with pytest.raises(KeyError, match="no tensors named"):
        load_into_module(module, {"other": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        load_into_module(module, {"weight": torch.ones(3, 3)})


def test_auto_backend_uses_collectives_only_with_gpus_on_both_sides():
    assert resolve_backend("auto", 1, 1) == ("collective", "nccl")
    assert resolve_backend("auto", 1, 0) == ("object_store", None)
    assert resolve_backend("collective", 0, 0) == ("collective", "gloo")
    with pytest.raises(ValueError, match="weight_sync.backend"):
        resolve_backend("shm", 0, 0)
