"""What a run is and what every mode shares: the resolved :class:`~r3exp.runtime.run.Run`, launching it on its
ranks (:mod:`~r3exp.runtime.launch`), the task/model/engine (:mod:`~r3exp.runtime.components`), the checkpoint
to resume and the trainer settings checked up front, training, evaluation and lm-eval runs, publishing (results,
tables, W&B), and preemption."""
