"""Generation with Hugging Face ``generate``: slower than vLLM, for platforms where vLLM won't install."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch.nn.utils.rnn import pad_sequence

from r3exp.distributed import Ranks
from r3exp.errors import ConfigError
from r3exp.models.loading import load_model, load_tokenizer
from r3exp.rollout.engines.interface import Completion, GenerationEngine, SamplingConfig


class HFEngine(GenerationEngine):
    """Samples from its own copy of the policy with ``model.generate`` (batched, left-padded).

    Args:
        model_path: directory or hub id of the policy (merged weights).
        dtype: ``float32`` on CPU, ``bfloat16`` on GPU.
        batch_size: prompts per ``generate`` call (each with ``n`` samples).
        ranks: how the run's ranks share engines; this engine serves its own rank only.
    """

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        seed: int = 0,
        batch_size: int = 64,
        device: str | None = None,
        ranks: Ranks | None = None,
    ):
        super().__init__(seed)
        if ranks is not None and ranks.engine_size != 1:
            raise ConfigError(
                f"engine=hf serves one rank; {ranks.engine_size} ranks per engine need engine=vllm "
                "(engine.tensor_parallel_size)"
            )
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(model_path, dtype=dtype).eval()  # in dtype: the trainer's master weights are not its
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self._asleep = False
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.pad_id = self.tokenizer.pad_token_id

    @torch.no_grad()
    def _generate(self, prompts, n, sampling: SamplingConfig, seeds):
        self.wake_up()
        results: list[list[Completion]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            torch.manual_seed(seeds[start])
            results.extend(self._generate_chunk(chunk, n, sampling))
        return results

    def _generate_chunk(self, prompts, n, sampling: SamplingConfig) -> list[list[Completion]]:
        reversed_ids = [torch.tensor(p[::-1]) for p in prompts]  # left-pad by padding the reversal
        input_ids = pad_sequence(reversed_ids, batch_first=True, padding_value=self.pad_id).flip(1)
        attention = pad_sequence([torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True).flip(1)
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            **self._sampling_kwargs(sampling),
            max_new_tokens=sampling.max_tokens,
            min_new_tokens=sampling.min_tokens,
            num_return_sequences=n,
            output_scores=True,
            return_dict_in_generate=True,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
        )
        new_tokens = out.sequences[:, input_ids.shape[1] :].cpu()  # (B*n, T)
        # scores are the processed logits (temperature, top-p) the tokens were sampled from
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1).cpu()  # (B*n, T, V)
        token_logprobs = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        completions = [self._completion(new_tokens[i], token_logprobs[i]) for i in range(len(new_tokens))]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]

    @staticmethod
    def _sampling_kwargs(sampling: SamplingConfig) -> dict:
        if sampling.temperature == 0.0:  # greedy, as vLLM's temperature=0
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}

    def _completion(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> Completion:
        ids = tokens.tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), None)
        finished = end is not None
        end = end or len(ids)
        return Completion(
            ids[:end], logprobs[:end].tolist(), self.tokenizer.decode(ids[:end], skip_special_tokens=True), finished
        )

    def _load_weights(self, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        self.wake_up()
        held = self.model.state_dict()  # views of its parameters: each pushed tensor is copied in as it comes
        unexpected = []
        with torch.no_grad():
            for name, tensor in state.items() if isinstance(state, Mapping) else state:
                if name in held:
                    held[name].copy_(tensor)  # to the engine's device and dtype
                else:
                    unexpected.append(name)
        if unexpected:
            raise KeyError(f"weights not in the engine's model: {unexpected[:5]}")

    def sleep(self) -> None:
        """On an accelerator, move the engine's copy of the model to CPU memory while the trainer steps."""
        if self.device.type != "cpu" and not self._asleep:
            self.model.to("cpu")
            torch.cuda.empty_cache()
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.model.to(self.device)
            self._asleep = False
