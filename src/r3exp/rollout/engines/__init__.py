"""Generation engines behind one interface."""

from r3exp.rollout.engines.interface import Completion, GenerationEngine, SamplingConfig

__all__ = ["Completion", "GenerationEngine", "SamplingConfig"]
