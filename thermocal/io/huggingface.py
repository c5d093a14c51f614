"""A Hugging Face `save_pretrained` directory as a module to probe: offline, safetensors weights
only, no remote code, with the loss transformers itself uses for the architecture."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from thermocal.errors import CheckpointError
from thermocal.io.loaders import Loaded, ModelOptions
from thermocal.text import first_line

HUGGINGFACE = "huggingface"


class HuggingFaceLogits(torch.nn.Module):
    """A transformers model as `inputs -> logits`, the interface every engine probes; the
    inputs go to the model's main input (input_ids for language models)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.model.main_input_name: inputs}).logits


def huggingface_loss(architecture: str, config: Any) -> str | None:
    """The loss transformers itself uses for this architecture (its `labels=` path)."""
    if architecture.endswith(("ForCausalLM", "LMHeadModel", "ForTokenClassification")):
        return "lm"  # cross-entropy over every position, ignore_index -100, as transformers does
    if architecture.endswith("ForSequenceClassification") or architecture.endswith("ForImageClassification"):
        problem = getattr(config, "problem_type", None)
        if problem == "regression" or (problem is None and getattr(config, "num_labels", 2) == 1):
            return "mse"
        return "bce_with_logits" if problem == "multi_label_classification" else "cross_entropy"
    return None


def load_huggingface(path: Path, options: ModelOptions) -> Loaded:
    """The directory's model, wrapped as HuggingFaceLogits (`options` has nothing to say here:
    the directory builds itself)."""
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError("is a Hugging Face model directory; loading it needs transformers: "
                              "pip install transformers (or, from a clone of thermocal, pip install '.[hf]')", path) from exc
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(f"has a config.json transformers cannot read ({first_line(exc)})", path) from exc
    architecture = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        raise CheckpointError(f"config.json names architecture {architecture!r}, which this transformers "
                              f"({transformers.__version__}) does not have (remote code is never run)", path)
    try:
        with warnings.catch_warnings():  # use_safetensors=True: nothing is unpickled
            warnings.simplefilter("ignore")
            model = model_class.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                                trust_remote_code=False, attn_implementation="eager")
    except Exception as exc:
        raise CheckpointError(f"cannot be loaded as {architecture} from safetensors ({first_line(exc)})", path) from exc
    loss = huggingface_loss(architecture, config)
    note = f"transformers {architecture}" + (f"; its own loss: {loss}" if loss else "")
    return Loaded(HuggingFaceLogits(model), HUGGINGFACE, note, default_loss=loss)
