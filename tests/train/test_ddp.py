"""Lightning DDP on CPU with 2 real processes (gloo): each epoch reaches the search once.

Lightning's ``ddp`` strategy starts the calling *script* again for rank 1, so the run
is a script in a subprocess, as ``python -m nas.run trainer=ddp`` would be.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch import nn

    from nas.train import DigitsDataModule, TrainerSettings, train_and_evaluate
    from nas.train.reference import SmallCNN

    out = Path(sys.argv[1])


    class NaNOnRankOne(nn.Module):
        # Diverges on one process only: the other must stop too instead of waiting forever.
        def __init__(self):
            super().__init__()
            self.net = SmallCNN(10, width=4)

        def forward(self, images):
            logits = self.net(images)
            return logits * torch.nan if self.training and dist.get_rank() == 1 else logits


    def sink(metrics):
        with open(out / "reports.jsonl", "a") as file:
            file.write(json.dumps(metrics.to_dict()) + "\\n")


    settings = TrainerSettings(accelerator="cpu", devices=2, strategy="ddp")
    data = DigitsDataModule(image_size=8, batch_size=32)
    for name, factory in (("ok", lambda: SmallCNN(10, width=4)), ("nan", NaNOnRankOne)):
        result = train_and_evaluate(factory, data, epochs=2, trainer=settings, on_epoch=sink)
        (out / f"{name}-rank{result.global_rank}.json").write_text(json.dumps(result.to_dict()))
    """
)


def _without_time(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "elapsed_s"}


def test_ddp_on_two_cpu_processes_reports_each_epoch_once(tmp_path: Path) -> None:
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )

    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in reports] == [1, 2]
    ranks = [json.loads((tmp_path / f"ok-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["status"] == "ok", ranks[0]["reason"]
    assert ranks[0]["history"] == reports
    # The metrics are reduced over both processes, so both ranks hold the same numbers
    # (only their clocks differ).
    for rank in ranks:
        assert [_without_time(m) for m in rank["history"]] == [_without_time(m) for m in reports]

    # A loss that diverges on rank 1 alone fails the run on both ranks, without a hang.
    for rank in (0, 1):
        failed = json.loads((tmp_path / f"nan-rank{rank}.json").read_text())
        assert failed["status"] == "failed"
        assert "non-finite" in failed["reason"]
