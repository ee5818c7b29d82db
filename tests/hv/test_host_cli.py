"""`xenvirtio host start/status/stop` on their own run directory."""

from pathlib import Path

from click.testing import CliRunner

from xenvirtio.cli import cli
from xenvirtio.hv.emu.host import host_status
from xenvirtio.testing.hv_harness import process_alive as alive


def test_start_status_stop(tmp_path: Path) -> None:
    runner = CliRunner()
    run_dir = str(tmp_path / "host")
    started = runner.invoke(cli, ["host", "start", "--run-dir", run_dir])
    assert started.exit_code == 0, started.output
    status = host_status(run_dir)
    try:
        assert "ready" in started.output
        again = runner.invoke(cli, ["host", "start", "--run-dir", run_dir])
        assert again.exit_code != 0 and "already running" in again.output
        shown = runner.invoke(cli, ["host", "status"], env={"XENVIRTIO_RUN_DIR": run_dir})
        assert shown.exit_code == 0, shown.output
        assert "Domain-0" in shown.output and str(status.hv_pid) in shown.output
    finally:
        stopped = runner.invoke(cli, ["host", "stop", "--run-dir", run_dir])
    assert stopped.exit_code == 0, stopped.output
    for pid in (status.hv_pid, status.zygote_pid, status.xenstored_pid):
        assert pid is not None and not alive(pid)
    missing = runner.invoke(cli, ["host", "status", "--run-dir", run_dir])
    assert missing.exit_code != 0 and "no emu host" in missing.output
