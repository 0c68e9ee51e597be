"""The embedded default's text corpus: what the tiny tokenizer is trained on.

Glue between ``tasks`` and ``models`` (which know nothing of each other): the built-in tasks, with
their packaged default configs, contribute their prompts and answers.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from r3exp import CONF_DIR

BUILTIN_TASKS = ("countdown", "apigen")
CORPUS_EXAMPLES_PER_TASK = 400


def tiny_corpus(conf_dir: Path = CONF_DIR) -> list[str]:
    """Texts of every built-in task (default prompts, generated examples, their answers)."""
    texts: list[str] = []
    for name in BUILTIN_TASKS:
        cfg = OmegaConf.load(conf_dir / "task" / f"{name}.yaml")
        cfg.seed = 0
        task = instantiate(cfg)
        texts.extend(task.corpus(CORPUS_EXAMPLES_PER_TASK))
    return texts
