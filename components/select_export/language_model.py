"""The export of a language model (an ``rnn``-space cell trained on Penn Treebank) as TorchScript.

``torch.jit.script`` cannot compile the cell (its program is a Python dataclass, and training runs a
custom autograd Function), but ``torch.jit.trace`` can trace it: in eval mode without gradients a step
is plain tensor operations. So one time step is traced, and the loop over time is scripted around it.
The exported module has the trained model's own interface, so :func:`components.trainer.lm.evaluate_lm`
measures both alike::

    model = torch.jit.load("model.pt")              # on the CPU
    state = model.initial_state(batch_size)          # [(h, c)] per layer, zeros, batch_size x hidden each
    logits, state = model(tokens, state)             # tokens: T x B int64 word ids; logits: T x B x vocab

Word ids index ``vocab`` in ``architecture.json``. Carrying ``state`` from one call to the next reads
a long text in pieces, as the reported perplexities were measured.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from components.trainer.lm import LMConfig, RNNLanguageModel, batchify, build_lm, perplexity
from controller.errors import NasrlError

INPUT_SPEC = (
    "TorchScript on the CPU: model(tokens, state) with tokens T×B int64 word ids (see vocab) and state from "
    "model.initial_state(B) or the previous call; returns (logits T×B×vocab, state)"
)
# The export must measure what the model measured; float32 sums in another order may differ this much.
LOSS_TOLERANCE = 1e-4


class _Step(nn.Module):
    """One time step with the state as two stacked tensors: the shape ``torch.jit.trace`` records."""

    def __init__(self, model: RNNLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        state = [(h[i], c[i]) for i in range(len(self.model.cells))]
        logits, state = self.model(tokens.unsqueeze(0), state)
        return logits[0], torch.stack([s[0] for s in state]), torch.stack([s[1] for s in state])


class ExportedLanguageModel(nn.Module):
    """The traced step run over a sequence; scripted, so the sequence length and batch size are free."""

    def __init__(self, step: nn.Module, num_layers: int, hidden_size: int) -> None:
        super().__init__()
        self.step = step
        self.num_layers = num_layers
        self.hidden_size = hidden_size

    def forward(
        self, tokens: Tensor, state: list[tuple[Tensor, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        if state is None:
            state = self.initial_state(tokens.size(1))
        h = torch.stack([s[0] for s in state])
        c = torch.stack([s[1] for s in state])
        outputs: list[Tensor] = []
        for t in range(tokens.size(0)):
            logits, h, c = self.step(tokens[t], h, c)
            outputs.append(logits)
        return torch.stack(outputs), [(h[i], c[i]) for i in range(self.num_layers)]

    @torch.jit.export
    def initial_state(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        zeros = torch.zeros(batch_size, self.hidden_size)
        return [(zeros, zeros) for _ in range(self.num_layers)]


def rebuild_lm(checkpoint: Mapping[str, Any]) -> RNNLanguageModel:
    """The trained language model of a checkpoint, in eval mode, on the CPU."""
    model = build_lm(checkpoint["architecture"], checkpoint["dataset"]["vocab_size"], LMConfig(**checkpoint["lm"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def to_torchscript(model: RNNLanguageModel) -> bytes:
    hidden, layers = model.embedding.embedding_dim, len(model.cells)
    example = (torch.zeros(2, dtype=torch.int64), torch.zeros(layers, 2, hidden), torch.zeros(layers, 2, hidden))
    # The TracerWarnings are about the cell's constants (its tree, its elem_mult columns): fixed per architecture.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        step = torch.jit.trace(_Step(model).eval(), example)
    scripted = torch.jit.script(ExportedLanguageModel(step, layers, hidden).eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def export_language_model(checkpoint: Mapping[str, Any], data_dir: str) -> tuple[bytes, dict[str, float], dict]:
    """The chosen language model's TorchScript, its test loss and perplexity (measured once), and the
    ``architecture.json`` that goes with it. Raises if the export does not measure what the model does."""
    from components.trainer import lm
    from components.trainer.data_store import resolve_data_dir

    corpus = lm.load_ptb(data_dir=resolve_data_dir(data_dir or None))
    if corpus.vocab_size != checkpoint["dataset"]["vocab_size"]:
        raise NasrlError(
            f"the corpus has {corpus.vocab_size} words, the final models {checkpoint['dataset']['vocab_size']}"
        )
    config = LMConfig(**checkpoint["lm"])
    model = rebuild_lm(checkpoint)
    test_data = batchify(corpus.test, config.eval_batch_size)
    loss = lm.evaluate_lm(model, test_data, config.bptt)
    scripted = to_torchscript(model)
    exported = torch.jit.load(io.BytesIO(scripted), map_location="cpu")
    # What users load must measure what we report.
    exported_loss = lm.evaluate_lm(exported, test_data, config.bptt)
    if not math.isclose(exported_loss, loss, rel_tol=LOSS_TOLERANCE):
        raise NasrlError(f"the TorchScript export's test loss is {exported_loss:.6f}, the model's {loss:.6f}")
    description = {
        "dataset": checkpoint["dataset"],
        "lm": {k: v for k, v in checkpoint["lm"].items() if k not in ("device", "num_threads")},
        "input": INPUT_SPEC,
        "vocab": list(corpus.vocab),
    }
    return scripted, {"loss": loss, "perplexity": perplexity(loss)}, description
