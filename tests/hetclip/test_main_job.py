"""The main job end to end at tiny size: three models trained, evaluated, and a report with
its table and figures; a rerun reuses the finished runs."""

import json

import pytest

from hetclip.main_job import RUNS, main


@pytest.mark.slow
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


def test_main_job_stopped_by_a_signal_exits_with_its_code_and_says_how_to_resume(
    monkeypatch, tmp_path, capsys
):
    import hetclip.main_job as main_job
    from hetclip.train.loop import Stopped

    started = []

    def stopped_run(name, config, workdir):
        started.append(name)
        raise Stopped(15, 7)

    monkeypatch.setattr(main_job, "run_one", stopped_run)
    code = main(["--out", str(tmp_path / "runs"), "--report", str(tmp_path / "report")])
    assert code == 128 + 15
    assert started == [RUNS[0][0]]  # the later runs were not started
    assert "stopped by signal 15 at step 7; rerun to resume" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
