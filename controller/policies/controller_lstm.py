"""The paper's controller network: a 2-layer LSTM that emits one token per step (section 3.1-3.3).

Each step's token is fed back, through an embedding of its token type, as the next input. Anchor
steps implement the paper's skip-connection attention::

    P(layer j is an input of layer i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i))

The paper does not say what the LSTM reads after an anchor step. ENAS feeds the mean of the chosen
layers' hidden states; that makes every input depend on earlier hidden states, so scoring a stored
architecture must run step by step. We feed ``sum_j skip_j e_j / (1 + #skips)`` instead, ``e_j`` a
learned embedding of layer ``j``: it still tells the LSTM which layers were wired in, and with
every input known from the tokens alone, scoring a batch is one LSTM call over the whole sequence
(the REINFORCE update is 4-5x faster for it; see bench/controller_overhead.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import linear, logsigmoid

from controller.spaces import Action, Anchor, Choice, Step


@dataclass
class Rollout:
    """A batch of B token sequences with their summed log-probabilities and entropies."""

    actions: list[list[Action]]  # B lists, one decision per step
    log_prob: Tensor  # [B]
    entropy: Tensor  # [B]


class ControllerLSTM(nn.Module):
    def __init__(
        self,
        token_sizes: dict[str, int],
        max_layers: int = 0,
        hidden_size: int = 35,
        num_layers: int = 2,
        temperature: float = 1.0,
        tanh_constant: float | None = None,
        init_range: float = 0.08,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers)
        self.start = nn.Parameter(torch.empty(1, hidden_size))  # the first step's input
        self.embeddings = nn.ModuleDict({k: nn.Embedding(n, hidden_size) for k, n in token_sizes.items()})
        self.heads = nn.ModuleDict({k: nn.Linear(hidden_size, n) for k, n in token_sizes.items()})
        self.layer_embedding = nn.Embedding(max(max_layers, 1), hidden_size)  # e_j, read after anchors
        self.w_prev = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_curr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    def _logits(self, logits: Tensor) -> Tensor:
        logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _anchor_input(self, bits: Tensor) -> Tensor:
        """[..., i] bits -> [..., H]: the mean embedding of the chosen layers (zero if none)."""
        i = bits.shape[-1]
        chosen = bits @ self.layer_embedding.weight[:i]
        return chosen / (1.0 + bits.sum(-1, keepdim=True))

    # -- sampling: one step at a time, each token drawn from the previous step's output ---------
    @torch.inference_mode()
    def sample(self, steps: Sequence[Step], batch_size: int, generator: torch.Generator | None = None) -> Rollout:
        """Draw ``batch_size`` sequences. No gradient: the update re-scores them with :meth:`score`.

        The LSTM runs one cell call per layer and step on the raw weights (the same arithmetic as
        ``self.lstm``): going through ``nn.LSTM`` for a single step costs 3x more, and at paper scale
        the controller samples 12,800 sequences of 120 steps.
        """
        b, h_size = batch_size, self.hidden_size
        cells = [
            tuple(getattr(self.lstm, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for layer in range(self.lstm.num_layers)
        ]
        hs = [torch.zeros(b, h_size) for _ in cells]
        cs = [torch.zeros(b, h_size) for _ in cells]
        inputs = self.start.expand(b, h_size)
        log_prob, entropy = torch.zeros(b), torch.zeros(b)
        anchor_keys: list[Tensor] = []  # W_prev h_j, computed once: every later layer reads it
        columns: list[Tensor] = []
        for step in steps:
            h = inputs
            for layer, weights in enumerate(cells):
                hs[layer], cs[layer] = torch._VF.lstm_cell(h, (hs[layer], cs[layer]), *weights)
                h = hs[layer]
            if isinstance(step, Choice):
                head = self.heads[step.kind]
                log_p = torch.log_softmax(self._logits(linear(h, head.weight, head.bias)), dim=-1)
                p = log_p.exp()
                a = torch.multinomial(p, 1, generator=generator)
                log_prob += log_p.gather(1, a).squeeze(1)
                entropy -= (p * log_p).sum(-1)
                a = a.squeeze(1)
                inputs = self.embeddings[step.kind].weight[a]
                columns.append(a)
            else:
                assert isinstance(step, Anchor)
                bits = torch.zeros(b, 0)
                if step.layer > 0:
                    keys = torch.stack(anchor_keys, dim=1)  # [B, i, H]
                    logits = linear(torch.tanh(keys + linear(h, self.w_curr.weight).unsqueeze(1)), self.v.weight)
                    logits = logits.squeeze(-1)
                    bits = torch.bernoulli(torch.sigmoid(logits), generator=generator)
                    lp, ent = _bernoulli_terms(logits, bits)
                    log_prob += lp
                    entropy += ent
                inputs = self._anchor_input(bits)
                anchor_keys.append(linear(h, self.w_prev.weight))
                columns.append(bits)
        rows: list[list[Action]] = [[] for _ in range(b)]
        for step, col in zip(steps, columns, strict=True):
            if isinstance(step, Choice):
                for row, v in zip(rows, col.tolist(), strict=True):
                    row.append(v)
            else:
                for row, v in zip(rows, col.to(torch.int64).tolist(), strict=True):
                    row.append(tuple(v))
        return Rollout(rows, log_prob, entropy)

    # -- scoring: all inputs are known from the tokens, so the LSTM runs over the whole sequence ---
    def score(self, steps: Sequence[Step], actions: Sequence[Sequence[Action]]) -> Rollout:
        b, t_len = len(actions), len(steps)
        # One tensor for the whole batch: each row is the decisions flattened (anchor bits inline).
        flat = torch.tensor([_flatten(row) for row in actions], dtype=torch.long).reshape(b, -1)
        step_inputs: list[Tensor] = []  # what each step feeds to the next
        by_kind: dict[str, list[int]] = {}
        targets: dict[int, Tensor] = {}
        anchor_ts: list[int] = []
        offset = 0
        for t, step in enumerate(steps):
            if isinstance(step, Choice):
                a = flat[:, offset]
                offset += 1
                targets[t] = a
                by_kind.setdefault(step.kind, []).append(t)
                step_inputs.append(self.embeddings[step.kind](a))
            else:
                bits = flat[:, offset : offset + step.layer].float()
                offset += step.layer
                targets[t] = bits
                anchor_ts.append(t)
                step_inputs.append(self._anchor_input(bits))
        inputs = torch.stack([self.start.expand(b, self.hidden_size), *step_inputs[:-1]])  # [T, B, H]
        out, _ = self.lstm(inputs)  # [T, B, H]

        log_prob, entropy = torch.zeros(b), torch.zeros(b)
        for kind, ts in by_kind.items():
            log_p = torch.log_softmax(self._logits(self.heads[kind](out[ts])), dim=-1)  # [n, B, V]
            a = torch.stack([targets[t] for t in ts]).unsqueeze(-1)  # [n, B, 1]
            log_prob = log_prob + log_p.gather(-1, a).squeeze(-1).sum(0)
            entropy = entropy - (log_p.exp() * log_p).sum(-1).sum(0)
        if len(anchor_ts) > 1:
            h = out[anchor_ts]  # [L, B, H]: layer l's anchor state
            n_layers = len(anchor_ts)
            keys, queries = self.w_prev(h), self.w_curr(h)
            # logits[i, j] for every pair at once; only j < i are decisions.
            logits = self.v(torch.tanh(keys.unsqueeze(0) + queries.unsqueeze(1))).squeeze(-1)  # [L, L, B]
            bits = torch.zeros(n_layers, n_layers, b)
            for i, t in enumerate(anchor_ts):
                if i:
                    bits[i, :i] = targets[t].T
            mask = torch.tril(torch.ones(n_layers, n_layers), diagonal=-1).unsqueeze(-1)
            lp, ent = _bernoulli_terms(logits, bits, reduce_last=False)
            log_prob = log_prob + (lp * mask).sum((0, 1))
            entropy = entropy + (ent * mask).sum((0, 1))
        assert t_len == len(step_inputs)
        return Rollout([list(a) for a in actions], log_prob, entropy)


def _flatten(row: Sequence[Action]) -> list[int]:
    out: list[int] = []
    for a in row:
        if isinstance(a, tuple):
            out.extend(a)
        else:
            out.append(a)
    return out


def _bernoulli_terms(logits: Tensor, bits: Tensor, reduce_last: bool = True) -> tuple[Tensor, Tensor]:
    """Log-probability of ``bits`` and entropy under independent Bernoullis with these logits."""
    log_on, log_off = logsigmoid(logits), logsigmoid(-logits)
    lp = bits * log_on + (1 - bits) * log_off
    p = torch.sigmoid(logits)
    ent = -(p * log_on + (1 - p) * log_off)
    return (lp.sum(-1), ent.sum(-1)) if reduce_last else (lp, ent)
