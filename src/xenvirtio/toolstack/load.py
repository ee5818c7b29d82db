"""Read an xl.cfg file from disk: the I/O edge in front of `cfg` and `domcfg`."""

from __future__ import annotations

import os
from pathlib import Path

from xenvirtio.toolstack.cfg import parse_config
from xenvirtio.toolstack.domcfg import DomainConfig, domain_config
from xenvirtio.toolstack.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # far above any real xl.cfg; bounds what a typo can load


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The file's text; `ConfigError` if it cannot be read or is not UTF-8."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, 0, None, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(name, 0, None, f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(name, line, None, "not UTF-8 text") from None


def load_domain_config(path: str | os.PathLike[str]) -> DomainConfig:
    """Parse and validate the config at ``path``; relative images resolve against its dir."""
    name = os.fspath(path)
    parsed = parse_config(read_config_text(name), name)
    return domain_config(parsed, base_dir=str(Path(name).resolve().parent))
