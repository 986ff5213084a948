"""`benchmarks/gpu_check.py --cpu` runs every step of the GPU-path check on the CPU (a real local Ray, a real
DeepSpeed ZeRO-2 bf16 learner, the tiny policy): flow-expert GRPO with KL, weight sync, checkpoint and resume,
LoRA-with-dropout GRPO on tokens, the latency benchmark; every check passes and the JSON says so."""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_gpu_check_in_cpu_mode_passes_every_check_and_writes_json(ray_cluster, tiny_grpo_assets, tmp_path, capsys,
                                                                   load_benchmark):
    gpu_check = load_benchmark("gpu_check")

    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--cpu", "--assets", str(tiny_grpo_assets["root"]), "--workdir", str(tmp_path / "work"),
                           "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    failed = [r for r in result["checks"] if not r["ok"]]
    assert code == 0 and result["passed"] and not failed, failed
    names = [r["check"] for r in result["checks"]]
    for prefix in ("expert:", "resume:", "vlm_lora:", "latency:"):
        assert any(n.startswith(prefix) for n in names), prefix
    checks = {r["check"]: r["value"] for r in result["checks"]}
    assert checks["expert: steps run"] == [1, 2, 3] and checks["resume: continues at step 3"] == [3]
    assert checks["resume: step-3 expert weights identical"] == 0.0
    assert abs(checks["expert: first-update ratio"] - 1.0) <= 1e-3
    assert checks["expert: weight-sync backend for the placement"] == "object_store"
    assert "GPU-path check (cpu mode)" in printed and "FAIL" not in printed
    assert ray_cluster.is_initialized()  # the session's Ray is left running
