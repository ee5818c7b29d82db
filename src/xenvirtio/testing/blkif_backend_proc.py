"""blkback in a dom0 process of its own, so a test can kill it and start another.

``python -m xenvirtio.testing.blkif_backend_proc RUN_DIR BACKEND_DIR IMAGE [CONFIG]``
(``CONFIG``: JSON `BlkbackConfig` fields) serves one vbd with a `BlkifBackendRunner`,
prints ``ready`` once it serves and exits when its stdin closes. `BlkbackProcess` runs
it: ``kill()`` is SIGKILL (the process dies holding its mappings and ports, as a crash
does), ``stop()`` the orderly end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.hv.emu import open_emu


def main(argv: list[str]) -> int:
    run_dir, backend, image = argv[:3]
    config = BlkbackConfig(**json.loads(argv[3])) if len(argv) > 3 else BlkbackConfig()
    hv = open_emu(run_dir)
    runner = BlkifBackendRunner(hv)
    try:
        runner.start_thread(0.02)
        runner.add(backend, Path(image), config)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while os.read(0, 4096):  # until stdin closes
            pass
    finally:
        runner.close()
        hv.close()
    return 0


class BlkbackProcess:
    """`main` serving ``backend`` from ``image`` in a new process (new session)."""

    def __init__(
        self, run_dir: Path, backend: str, image: Path, config: BlkbackConfig | None = None
    ) -> None:
        args = [sys.executable, "-m", __name__, str(run_dir), backend, str(image)]
        if config is not None:
            args.append(json.dumps(dataclasses.asdict(config)))
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError(f"blkback process did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
