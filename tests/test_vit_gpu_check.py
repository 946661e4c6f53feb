"""``make gpu-check``'s steps on the CPU at tiny sizes, its sizing rule and its refusals."""
from __future__ import annotations

import json

import pytest
import torch

from vit import gpu_check


def test_plan_epochs_fits_the_time_left():
    # 300 s left, 20 s overhead, 6 cells of 4 s epochs with a 1.3 safety factor: (300 - 20) / (6 * 4 * 1.3) = 8.97
    assert gpu_check.plan_epochs(300, 4.0, 6, overhead_s=20) == 8
    assert gpu_check.plan_epochs(10, 4.0, 6, overhead_s=20) == 1            # at least one epoch
    assert gpu_check.plan_epochs(1e9, 1.0, 1, overhead_s=0) == 50           # capped
    with pytest.raises(ValueError, match="epoch time"):
        gpu_check.plan_epochs(100, 0.0, 6, overhead_s=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_says_so_in_one_line(capsys):
    assert gpu_check.main(["--budget", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]
    assert gpu_check.main(["--device", "cpu"]) == 2          # the full-scale arm needs a GPU
    assert gpu_check.main(["--budget", "-1"]) == 2


def test_tiny_test_and_bench_steps_on_cpu_record_a_summary(tmp_path):
    """The first two steps at tiny sizes (seconds); the arm's command is `vit noise-dose`, run end to
    end by tests/test_vit_noise_dose.py, and the whole check by the slow test below."""
    if gpu_check._data_root(None) is None:
        pytest.skip("Fashion-MNIST is not installed (make data)")
    # the budget only caps the steps (each gets a share of what is left); generous, so that a loaded
    # machine cannot make this a timing test
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--budget", "900", "--out", str(tmp_path),
                         "--steps", "cuda_tests,bench"])
    (run,) = list(tmp_path.iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert [x["step"] for x in s["steps"]] == ["cuda_tests", "bench"] and not s["arm"]["ran"]
    assert (run / "bench.json").is_file() and "recorded in" in (run / "summary.txt").read_text()
    assert rc == 0, [(x["step"], x["rc"], x["tail"][-300:]) for x in s["steps"] if x["rc"] not in (0, 5)]
    assert gpu_check.main(["--device", "cpu", "--tiny", "--steps", "nope"]) == 2


@pytest.mark.slow
def test_tiny_steps_on_cpu_record_a_summary(tmp_path):
    if gpu_check._data_root(None) is None:
        pytest.skip("Fashion-MNIST is not installed (make data)")
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--budget", "240", "--out", str(tmp_path)])
    (run,) = list(tmp_path.iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert [x["step"] for x in s["steps"]] == ["cuda_tests", "bench", "timing", "arm"]
    assert s["arm"]["ran"] and s["arm"]["epochs"] >= 1
    assert (run / "arm_record" / "record.json").is_file() and (run / "bench.json").is_file()
    assert "recorded in" in (run / "summary.txt").read_text()
    assert rc == 0, [(x["step"], x["rc"], x["tail"][-300:]) for x in s["steps"] if x["rc"] not in (0, 5)]
