"""benchmarks/gpu_check.sh, the one command for a GPU machine: its non-CUDA parts run here on a tiny model."""
import json
import os
import subprocess
import sys

from conftest import REPO

from clip_convpass.registry import TRAINER_REGISTRY


def test_gpu_check_runs_its_cpu_parts_and_covers_every_method(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--output", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(out.read_text())
    assert "skipped" in result["cuda_tests"] or "passed" in result["cuda_tests"]  # the CUDA tests' summary line
    assert {m["trainer"] for m in result["methods"]} == set(TRAINER_REGISTRY.names())
    assert {m["prec"] for m in result["methods"]} >= {"bf16"}
    assert result["data_loading"]["evaluation_bound_by"] in ("data loading", "the model")
    assert all(result["projections"][k] > 0 for k in ("table2_grid_hours", "fewshot_suite_hours", "base2new_hours"))
