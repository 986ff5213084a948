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


@pytest.mark.parametrize("mode", ["gpu", "cpu"])
def test_each_mode_builds_assets_its_preset_can_read(mode, tmp_path, load_benchmark):
    """The GPU mode's `small` preset reads 28-pixel multiples (14-pixel patches merged 2 x 2), the tiny one 16:
    each mode's data and untrained policy are built and the policy encodes a scene of that data."""
    from rl.policy import SpanVLAPolicy
    from rl.scene_store import SceneStore

    gpu_check = load_benchmark("gpu_check")
    size = gpu_check.SIZES[mode]
    assets = gpu_check.build_assets(tmp_path, size["preset"], 4, size["image"])
    policy = SpanVLAPolicy.load(assets["policy"])
    scene = SceneStore(assets["train"]).scenes([0])[0]
    assert policy.config.backbone.preset == size["preset"]
    _pixels, grid, _seconds = policy.video.scene_videos(scene)  # raises where the size misses the patch grid
    assert grid.tolist() == [[2, 4, 8]] * 3  # per camera: 4 frames in 2 temporal patches, a 4 x 8 patch grid
