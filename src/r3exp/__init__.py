"""r3exp: Reflect, Retry, Reward."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the packaged configs (Hydra's primary config directory)
