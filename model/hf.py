"""Registration with transformers: `AutoConfig` / `AutoModelForCausalLM.from_pretrained(folder)` work offline.

Importing this module registers the "rustle" model type. The wrapper recomputes the whole sequence
at each step of transformers' `generate` (it keeps no transformers cache); our own `generate` is the
fast path.
"""
from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .config import ModelConfig
from .model import RustleLM

OWN_FIELDS = {f.name for f in fields(ModelConfig)}


class RustleConfig(PretrainedConfig):
    model_type = "rustle"

    def __init__(self, **kwargs) -> None:
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in OWN_FIELDS}
        super().__init__(**kwargs)
        for name, value in {**vars(ModelConfig()), **own}.items():
            setattr(self, name, value)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in OWN_FIELDS})


class RustleForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = RustleConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: RustleConfig) -> None:
        super().__init__(config)
        self.model = RustleLM(config.to_model_config())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        RustleLM._init(module)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> CausalLMOutput:
        logits = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs) -> dict:
        return {"input_ids": input_ids}


AutoConfig.register("rustle", RustleConfig, exist_ok=True)
AutoModelForCausalLM.register(RustleConfig, RustleForCausalLM, exist_ok=True)
