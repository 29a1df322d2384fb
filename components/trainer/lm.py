"""Train a language model built on a searched recurrent cell; its validation perplexity is the reward.

Penn Treebank, word level, the standard Mikolov split (components/trainer/ptb.py). The model is the
paper's (section 4.2): an embedding, two stacked cells (components/trainer/rnn_cell.py), a softmax tied to
the embedding or not, embedding and recurrent dropout, truncated backpropagation through time. The reward is
``reward_c / (validation perplexity)**2`` with c = 80, as in the paper: below 1 for any perplexity above
sqrt(80) ≈ 8.9, so even an excellent cell's reward is small (perplexity 80 gives 0.0125).

Like the image trainer, failures come back as FAILED results with a reason code (``nan_loss``,
``too_large``, ``invalid_architecture``), never as exceptions (components/trainer/outcome.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.trainer.errors import InvalidArchitecture, InvalidConfig
from components.trainer.model import count_parameters
from components.trainer.outcome import ChildFailed, ChildResult, Diverged, Status, guarded, resolve_device
from components.trainer.ptb import Corpus, batchify, load_ptb, write_ptb_files
from components.trainer.rnn_cell import RNNCell, State, compile_cell
from components.trainer.schedules import lr_multiplier

# Penn Treebank's loading lives in ptb.py; these names are imported from here too.
__all__ = [
    "CURVE_NAMES",
    "Corpus",
    "LMConfig",
    "LMResult",
    "RNNLanguageModel",
    "batchify",
    "build_lm",
    "count_parameters",
    "evaluate_lm",
    "lm_reward",
    "load_ptb",
    "lr_factor",
    "perplexity",
    "train_lm",
    "write_ptb_files",
]

CURVE_NAMES: tuple[str, ...] = ("train_loss", "train_perplexity", "val_loss", "val_perplexity")
NAN_CHECK_EVERY = 20  # steps between divergence checks (each check waits for the device)


# -- the model --------------------------------------------------------------------------------
def _variational_mask(like: Tensor, p: float) -> Tensor:
    """A B x H dropout mask, scaled by 1 / (1 - p), to be reused at every time step (Gal & Ghahramani)."""
    return like.new_empty(like.shape[-2:]).bernoulli_(1 - p).div_(1 - p)


class RNNLanguageModel(nn.Module):
    """Embedding -> ``num_layers`` cells -> softmax over the vocabulary (the paper's PTB model)."""

    def __init__(
        self,
        architecture: Mapping[str, Any],
        vocab_size: int,
        hidden_size: int = 200,
        num_layers: int = 2,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.dropout, self.recurrent_dropout, self.embedding_dropout = dropout, recurrent_dropout, embedding_dropout
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.cells = nn.ModuleList(RNNCell(architecture, hidden_size, hidden_size) for _ in range(num_layers))
        self.decoder = nn.Linear(hidden_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:  # Press & Wolf / Inan et al.: one matrix for input and output words
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def initial_state(self, batch_size: int) -> list[State]:
        return [cell.initial_state(batch_size) for cell in self.cells]  # type: ignore[operator]

    def forward(self, tokens: Tensor, state: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """``tokens``: T x B word ids. Returns T x B x vocab logits and the state after the last step."""
        state = state if state is not None else self.initial_state(tokens.shape[1])
        x = self.embedding(tokens)
        if self.training and self.embedding_dropout > 0:
            # Embedding dropout drops word *types*: a dropped word is zero wherever it occurs in the batch.
            keep = torch.rand(self.embedding.num_embeddings, 1, device=x.device) >= self.embedding_dropout
            x = x * (keep[tokens].to(x.dtype) / (1 - self.embedding_dropout))
        new_state = []
        for cell, layer_state in zip(self.cells, state, strict=True):
            if self.training and self.dropout > 0:
                x = x * _variational_mask(x, self.dropout)
            h_mask = None
            if self.training and self.recurrent_dropout > 0:
                h_mask = _variational_mask(layer_state[0], self.recurrent_dropout)
            x, layer_state = cell.sequence(x, layer_state, h_mask)
            new_state.append(layer_state)
        if self.training and self.dropout > 0:
            x = x * _variational_mask(x, self.dropout)
        return self.decoder(x), new_state


# -- training -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LMConfig:
    """How one language model is trained. The defaults are a fast CPU setting; the paper's are noted."""

    epochs: int = 6  # passes over the training tokens (paper: 35)
    batch_size: int = 20  # parallel streams per step (Zaremba et al.: 20)
    bptt: int = 35  # truncated backpropagation through this many steps (Zaremba et al.: 35)
    hidden_size: int = 200  # units per cell and embedding width (paper: "medium", 650 per Zaremba et al.)
    num_layers: int = 2  # stacked cells (paper: 2)
    tie_weights: bool = True  # the softmax reuses the embedding matrix (paper's best models share it)
    dropout: float = 0.2  # variational dropout on the embedding output, between layers and before the softmax
    recurrent_dropout: float = 0.1  # variational dropout on h_{t-1} before W_h, one mask per segment
    embedding_dropout: float = 0.1  # drops whole words from the embedding
    optimizer: Literal["sgd", "adam"] = "sgd"  # plain SGD as Zaremba et al., or Adam
    learning_rate: float = 20.0  # PyTorch word_language_model's 20 for SGD with grad_clip 0.25
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # per step
    lr_decay_epoch: int | None = None  # multiply the rate by 0.1 after this many epochs (final grid); None: never
    weight_decay: float = 0.0  # L2 penalty through the optimiser
    grad_clip: float = 0.25  # clip the gradient's global norm; keeps exploding cells trainable
    reward_c: float = 80.0  # reward = reward_c / (validation perplexity)^2 (paper: c = 80)
    reward_window: int = 5  # reward reads the lowest validation perplexity of the last min(this, epochs) epochs
    eval_batch_size: int = 10  # streams when measuring validation perplexity
    seed: int = 0  # seeds weight init and dropout masks
    max_parameters: int = 50_000_000  # bigger models fail "too_large" before any training
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda" or "cuda:N"
    num_threads: int | None = None  # torch CPU threads while training; None leaves torch's setting

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "bptt", "hidden_size", "num_layers", "reward_window", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfig(f"{name}: {value!r} is not allowed (allowed: integers >= 1)")
        if self.max_parameters < 1:
            raise InvalidConfig(f"max_parameters: {self.max_parameters!r} is not allowed (allowed: integers >= 1)")
        for name in ("dropout", "recurrent_dropout", "embedding_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidConfig(f"{name}: {getattr(self, name)!r} is not allowed (allowed: 0 <= p < 1)")
        for name in ("learning_rate", "grad_clip", "reward_c"):
            if not getattr(self, name) > 0:
                raise InvalidConfig(f"{name}: {getattr(self, name)!r} is not allowed (allowed: > 0)")
        if self.weight_decay < 0:
            raise InvalidConfig(f"weight_decay: {self.weight_decay!r} is not allowed (allowed: >= 0)")
        for name, allowed in (("optimizer", ("sgd", "adam")), ("lr_schedule", ("cosine", "constant"))):
            if getattr(self, name) not in allowed:
                raise InvalidConfig(f"{name}: {getattr(self, name)!r} is not allowed (allowed: {', '.join(allowed)})")
        if self.num_threads is not None and self.num_threads < 1:
            raise InvalidConfig(f"num_threads: {self.num_threads} is not allowed (allowed: None or >= 1)")
        # A decay at or after the last epoch would never happen: a grid point that silently equals another.
        decay = self.lr_decay_epoch
        if decay is not None and (type(decay) is not int or not 1 <= decay < self.epochs):
            raise InvalidConfig(
                f"lr_decay_epoch: {decay!r} is not allowed (allowed: None or 1..{self.epochs - 1}, below epochs)"
            )


@dataclass(frozen=True)
class LMResult(ChildResult):
    """The outcome of one language model's training, in the image trainer's ``TrainResult`` shape.

    ``to_dict`` has TrainResult's keys (``val_accuracy`` is always None here) plus ``val_perplexity``.
    """

    QUALITY = "val_perplexity"
    status: Status
    reward: float | None  # reward_c / val_perplexity**2; None when FAILED
    val_perplexity: float | None  # lowest validation perplexity over the reward window
    reason_code: str | None  # "invalid_architecture", "nan_loss" or "too_large" when FAILED
    reason: str | None  # a message for people when FAILED
    params: int | None  # trainable parameters (a tied matrix once); None when the cell could not be built
    train_seconds: float  # wall time of the whole call
    curves: dict[str, list[float]]  # per epoch: train_loss, train_perplexity, val_loss, val_perplexity
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # only with keep_model=True

    @property
    def val_accuracy(self) -> None:
        """Language models are scored by perplexity; kept so code written for TrainResult still runs."""
        return None

    def to_dict(self) -> dict[str, Any]:
        # The image trainer's cost fields too: a language model's FLOPs and latency are not measured (None).
        costs = dict.fromkeys(("flops", "latency_seconds", "latency_batch_seconds", "latency_batch_size"))
        return super().to_dict() | {"val_accuracy": None} | costs


def lm_reward(val_perplexity: float, c: float = 80.0) -> float:
    """The paper's reward for a language model: c / perplexity^2."""
    return c / val_perplexity**2


def perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy in nats); inf where that overflows."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf


def build_lm(architecture: Mapping[str, Any], vocab_size: int, config: LMConfig) -> RNNLanguageModel:
    return RNNLanguageModel(
        architecture,
        vocab_size,
        config.hidden_size,
        config.num_layers,
        config.dropout,
        config.recurrent_dropout,
        config.embedding_dropout,
        config.tie_weights,
    )


def train_lm(
    architecture: Mapping[str, Any],
    corpus: Corpus,
    config: LMConfig | None = None,
    *,
    keep_model: bool = False,
) -> LMResult:
    """Train a language model with ``architecture``'s cell on ``corpus.train``, validating every epoch."""
    config = config or LMConfig()
    started = time.perf_counter()
    curves: dict[str, list[float]] = {name: [] for name in CURVE_NAMES}
    try:
        compile_cell(architecture)
    except InvalidArchitecture as error:
        return LMResult.failed("invalid_architecture", str(error), None, started, curves)
    params: int | None = None  # counted on the built model: a tied matrix counts once

    def build_and_fit() -> RNNLanguageModel:
        nonlocal params
        torch.manual_seed(config.seed)
        model = build_lm(architecture, corpus.vocab_size, config)
        params = count_parameters(model)
        if params > config.max_parameters:
            raise ChildFailed("too_large", f"{params:,} parameters exceed max_parameters={config.max_parameters:,}")
        _fit(model, corpus, config, resolve_device(config.device), curves)
        return model

    try:
        model = guarded(build_and_fit, config.num_threads, lambda: params)
    except ChildFailed as failure:
        return LMResult.failed(failure.code, failure.reason, params, started, curves)
    assert params is not None
    val_perplexity = min(curves["val_perplexity"][-min(config.reward_window, config.epochs) :])
    reward = lm_reward(val_perplexity, config.reward_c)
    return LMResult.complete(reward, val_perplexity, params, started, curves, model.cpu() if keep_model else None)


def lr_factor(config: LMConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate at ``step`` over ``config.learning_rate``: the schedule, times 0.1 from
    ``lr_decay_epoch`` on (the image trainer's step decay, for the final grid)."""
    return lr_multiplier(config.lr_schedule, step, steps_per_epoch, config.epochs, config.lr_decay_epoch)


def _detach(state: list[State]) -> list[State]:
    """Truncated BPTT: the next segment starts from this state's values but does not backpropagate into it."""
    return [(h.detach(), c.detach()) for h, c in state]


def _fit(
    model: RNNLanguageModel, corpus: Corpus, config: LMConfig, device: torch.device, curves: dict[str, list[float]]
) -> None:
    model.to(device)
    train = batchify(corpus.train, config.batch_size).to(device)
    valid = batchify(corpus.valid, config.eval_batch_size).to(device)
    starts = range(0, len(train) - 1, config.bptt)
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, len(starts)))
    for epoch in range(1, config.epochs + 1):
        model.train()
        state = model.initial_state(config.batch_size)
        loss_sum = torch.zeros((), device=device)
        tokens = 0
        for step, start in enumerate(starts):
            inputs, targets = train[start : start + config.bptt], train[start + 1 : start + 1 + config.bptt]
            inputs = inputs[: len(targets)]
            logits, state = model(inputs, _detach(state))
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * targets.numel()
            tokens += targets.numel()
            if step % NAN_CHECK_EVERY == NAN_CHECK_EVERY - 1 and not torch.isfinite(loss_sum).item():
                raise Diverged(f"training loss became {loss_sum.item()} in epoch {epoch}, step {step + 1}")
        train_loss = loss_sum.item() / tokens
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} in epoch {epoch}")
        val_loss = evaluate_lm(model, valid, config.bptt)
        if not math.isfinite(val_loss) or not math.isfinite(perplexity(val_loss)):
            raise Diverged(f"validation loss became {val_loss} after epoch {epoch}")
        curves["train_loss"].append(train_loss)
        curves["train_perplexity"].append(perplexity(train_loss))
        curves["val_loss"].append(val_loss)
        curves["val_perplexity"].append(perplexity(val_loss))


@torch.no_grad()
def evaluate_lm(model: RNNLanguageModel, data: Tensor, bptt: int = 35) -> float:
    """Mean cross-entropy (nats per token) over ``data`` (steps x batch, from :func:`batchify`).

    The state carries over from segment to segment, as in training; perplexity is ``exp`` of this.
    """
    was_training = model.training
    model.eval()
    state = model.initial_state(data.shape[1])
    loss_sum, tokens = 0.0, 0
    for start in range(0, len(data) - 1, bptt):
        targets = data[start + 1 : start + 1 + bptt]
        logits, state = model(data[start : start + len(targets)], state)
        loss_sum += F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
        tokens += targets.numel()
    model.train(was_training)
    return loss_sum / max(tokens, 1)
