"""Verifiable tasks: the protocol and its implementations."""

from r3exp.tasks.apigen import ApigenTask
from r3exp.tasks.base import SPLITS, Task
from r3exp.tasks.bfcl import BfclTask
from r3exp.tasks.countdown import CountdownTask

__all__ = ["SPLITS", "Task", "ApigenTask", "BfclTask", "CountdownTask"]
