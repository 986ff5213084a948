"""The real deployment path: `ray start --head` on loopback, `ray job submit` of the tiny GRPO job, then its
metrics and checkpoint. (Runs its own cluster on its own ports and stops only that cluster's processes.)"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rl.deepspeed_engine import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _cluster_processes(gcs_port: int) -> list:
    """The processes of the cluster whose GCS listens on `gcs_port`, with every process they started."""
    markers = (f"--gcs_server_port={gcs_port}", f":{gcs_port}")
    victims = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            parts = proc.info["cmdline"] or []
            if any(part == markers[0] or (part.startswith("--gcs-address=") and part.endswith(markers[1]))
                   or (part.startswith("-Dray.address=") and part.endswith(markers[1])) for part in parts):
                victims += [proc] + proc.children(recursive=True)  # agents and workers rename themselves
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return victims


def _stop_cluster(gcs_port: int) -> None:
    """Kill the processes of the cluster whose GCS listens on `gcs_port` (`ray stop` would kill every cluster)."""
    for proc in _cluster_processes(gcs_port):
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def test_ray_job_submit_runs_the_tiny_job_on_a_head_node(tiny_grpo_assets, tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # a single-machine head: every port on 127.0.0.1
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port = free_port(), free_port()
    # Ray's fixed default ports (the job agent's 52365 above all) are taken by the test session's own
    # cluster: a second node on them starts, but its job agent cannot listen and no job can be submitted.
    own_ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port",
                                                        "ray-client-server-port")]
    out = tmp_path / "job"
    start = subprocess.run(
        [str(bin_dir / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         "--num-cpus=4", "--num-gpus=0", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         "--include-dashboard=true", "--disable-usage-stats", *own_ports],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert start.returncode == 0, start.stderr
    try:
        overrides = [
            f"policy_init={tiny_grpo_assets['policy']}", f"data.train={tiny_grpo_assets['train']}",
            f"data.val={tiny_grpo_assets['val']}", f"policy.codebook.path={tiny_grpo_assets['codebook']}",
            "grpo.steps=1", "grpo.groups_per_step=2", "grpo.group_size=4", "eval.every=0",
            f"logging.out_dir={out}", "logging.wandb=false", "logging.picture_every=0",
        ]
        command = [str(bin_dir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}",
                   "--working-dir", str(REPO), "--", "python", "-m", "rl.train", "--config", "configs/tiny.yaml",
                   *overrides]
        deadline = time.monotonic() + 120
        while True:  # the head's job agent comes up a little after `ray start` returns
            submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
            if "No available agent" not in submit.stderr + submit.stdout or time.monotonic() > deadline:
                break
            time.sleep(3.0)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        # the head started as the README says listens on loopback only (GCS, raylet, agents, dashboard, workers)
        pids = {p.pid for p in _cluster_processes(gcs_port)}
        listening = [(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        assert any(port == gcs_port for _, port in listening), listening
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _ in listening), listening
        assert "succeeded" in submit.stdout.lower()
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == 1 and records[-1]["rollout/num_samples"] == 8
        assert (out / "ckpt" / "latest").read_text().strip() == "step_1"
        assert (out / "ckpt" / "step_1" / "policy" / "manifest.json").is_file()
    finally:
        _stop_cluster(gcs_port)
        time.sleep(1.0)
