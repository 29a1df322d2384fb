"""Controller overhead: sample a batch of conv architectures and apply one REINFORCE update.

    python bench/controller_overhead.py            # 100 architectures, 20 layers, strides on

Prints milliseconds per architecture for sampling, for the update, and for both together, on one
CPU thread. Target: under 1 ms per architecture in all. For comparison it also times the same
update with step-by-step scoring (how it must run when the input after an anchor step depends on
hidden states, as in ENAS), so the gain of whole-sequence scoring is measured, not claimed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from controller.policies import Feedback, ReinforcePolicy
from controller.spaces import ConvSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-strides", action="store_true", help="3 tokens per layer instead of 5")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = ConvSpace(args.layers, predict_strides=not args.no_strides)
    policy = ReinforcePolicy(space, seed=0)
    steps = len(space.steps())
    ask_ms, tell_ms, seq_ms = [], [], []
    for i in range(args.repeats + 2):
        t0 = time.perf_counter()
        proposals = policy.ask(args.batch, space)
        t1 = time.perf_counter()
        feedback = [Feedback(p.architecture, p.policy_version, 0.5 + 0.001 * k) for k, p in enumerate(proposals)]
        policy.tell(feedback, space)
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            ask_ms.append((t1 - t0) * 1e3)
            tell_ms.append((t2 - t1) * 1e3)
    # The step-by-step alternative: score through the sampling loop with forced actions.
    for i in range(args.repeats + 2):
        proposals = policy.ask(args.batch, space)
        t3 = time.perf_counter()
        actions = [space.actions(p.architecture) for p in proposals]
        lp = _score_stepwise(policy, space, actions)
        (-lp.mean()).backward()
        t4 = time.perf_counter()
        policy.model.zero_grad()
        if i >= 2:
            seq_ms.append((t4 - t3) * 1e3)
    n = args.batch
    ask, tell, seq = statistics.median(ask_ms), statistics.median(tell_ms), statistics.median(seq_ms)
    print(f"conv space, {args.layers} layers, {steps} steps per architecture, batch {n}, 1 CPU thread")
    print(f"sample              {ask / n:7.3f} ms/architecture")
    print(f"REINFORCE update    {tell / n:7.3f} ms/architecture")
    print(f"sample + update     {(ask + tell) / n:7.3f} ms/architecture   (target < 1 ms)")
    print(
        f"stepwise scoring    {seq / n:7.3f} ms/architecture   (update cost if scored step by step; "
        f"whole-sequence scoring is {seq / tell:.1f}x faster)"
    )


def _score_stepwise(policy: ReinforcePolicy, space: ConvSpace, actions: list) -> torch.Tensor:
    """Teacher-forced log-probabilities, one LSTM call per step."""
    model = policy.model
    from controller.policies.controller_lstm import _bernoulli_terms
    from controller.spaces import Choice

    b = len(actions)
    inputs, state = model.start.expand(b, model.hidden_size), None
    log_prob = torch.zeros(b)
    keys: list[torch.Tensor] = []
    for t, step in enumerate(space.steps()):
        out, state = model.lstm(inputs.unsqueeze(0), state)
        h = out[0]
        if isinstance(step, Choice):
            log_p = torch.log_softmax(model._logits(model.heads[step.kind](h)), -1)
            a = torch.tensor([row[t] for row in actions])
            log_prob = log_prob + log_p.gather(1, a.unsqueeze(1)).squeeze(1)
            inputs = model.embeddings[step.kind](a)
        else:
            bits = torch.tensor([row[t] for row in actions], dtype=torch.float32).reshape(b, step.layer)
            if step.layer:
                logits = model.v(torch.tanh(torch.stack(keys, 1) + model.w_curr(h).unsqueeze(1))).squeeze(-1)
                log_prob = log_prob + _bernoulli_terms(logits, bits)[0]
            inputs = model._anchor_input(bits)
            keys.append(model.w_prev(h))
    return log_prob


if __name__ == "__main__":
    main()
