"""The composition root: the only place that picks a hypervisor implementation."""

from xenvirtio.runtime.hypervisor import RUN_DIR_ENV, default_run_dir, open_hypervisor

__all__ = ["RUN_DIR_ENV", "default_run_dir", "open_hypervisor"]
