"""The main job end to end at tiny size: three models trained, evaluated, and a report with
its table and figures; a rerun reuses the finished runs."""

import json

from hetclip.main_job import RUNS, main


def test_main_job_trains_three_models_and_writes_the_report(
    prepared_imagetext, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
    args = [
        "--steps",
        "2",
        "--size",
        "mu",
        "--res",
        "16",
        "--batch",
        "8",
        "--out",
        str(tmp_path / "runs"),
        "--report",
        str(tmp_path / "report"),
    ]
    assert main(args) == 0
    report = (tmp_path / "report" / "README.md").read_text()
    for name, directory, _, _ in RUNS:
        assert f"| {name} |" in report
        final = json.loads((tmp_path / "runs" / directory / "final_metrics.json").read_text())
        assert 0 <= final["zeroshot_heldout/acc1"] <= 1
        assert (tmp_path / "report" / f"reliability_{directory}.png").stat().st_size > 1000
    assert "| chance |" in report
    assert (tmp_path / "report" / "training_curves.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(args) == 0  # the rerun trains nothing
    assert capsys.readouterr().out.count("already trained") == len(RUNS)
