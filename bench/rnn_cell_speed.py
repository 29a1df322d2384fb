"""Recurrent cell speed: a compiled rnn-space cell against torch.nn.LSTM of the same size, same run.

    python bench/rnn_cell_speed.py                       # hidden 200 and 650, batch 20, bptt 35, 1 thread
    python bench/rnn_cell_speed.py --hidden 64 --batch 64

Tokens per second of a 2-layer stack through one truncated-BPTT segment, forward and backward (what
training costs), for: torch.nn.LSTM; a sampled cell (``--seed``) and the paper's cell, each through the
fused sequence path (``RNNCell.sequence``, what the trainer uses) and through plain autograd one step at
a time (``RNNCell.forward``, to measure what the fusion buys); and, as floors, the same loop with only
the matmuls of 8 leaves (the cell) or 4 gates (an LSTM) and one tanh per step. Runs alternate and the best of
``--repeats`` is kept, so a busy machine slows every contender alike. Prints cell / LSTM ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from components.trainer.rnn_cell import RNNCell
from controller.spaces import RNNCellSpace
from controller.spaces.rnn import PAPER_CELL


def lstm_step(hidden: int, layers: int, x: torch.Tensor) -> Callable[[], None]:
    lstm = nn.LSTM(hidden, hidden, layers).to(x.device)

    def run() -> None:
        out, _ = lstm(x)
        out.sum().backward()

    return run


def cell_step(architecture: dict, hidden: int, layers: int, x: torch.Tensor, fused: bool) -> Callable[[], None]:
    cells = [RNNCell(architecture, hidden, hidden).to(x.device) for _ in range(layers)]

    def run() -> None:
        inputs = x
        for cell in cells:
            if fused:
                inputs, _ = cell.sequence(inputs)
                continue
            state, outputs = cell.initial_state(x.shape[1]), []
            for x_t in inputs.unbind(0):
                state = cell(x_t, state)
                outputs.append(state[0])
            inputs = torch.stack(outputs)
        inputs.sum().backward()

    return run


def matmul_floor(base: int, hidden: int, layers: int, x: torch.Tensor) -> Callable[[], None]:
    """A cell's matmuls with almost no tree: W_x, W_h for ``base`` leaves, then h_t = tanh(first leaf)."""
    weights_x = [nn.Linear(hidden, base * hidden).to(x.device) for _ in range(layers)]
    weights_h = [nn.Linear(hidden, base * hidden, bias=False).to(x.device) for _ in range(layers)]

    def run() -> None:
        inputs = x
        for weight_x, weight_h in zip(weights_x, weights_h, strict=True):
            h, outputs = x.new_zeros(x.shape[1], hidden), []
            for xp_t in weight_x(inputs).unbind(0):
                h = torch.tanh((xp_t + weight_h(h))[:, :hidden])
                outputs.append(h)
            inputs = torch.stack(outputs)
        inputs.sum().backward()

    return run


def best_seconds(runs: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: allocator, oneDNN primitives, CUDA kernels
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 650])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="which sampled cell: sample_uniform(Random(seed))")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sampled = RNNCellSpace(8).sample_uniform(random.Random(args.seed))
    tokens = args.batch * args.bptt
    print(
        f"{args.layers} layers, batch {args.batch}, bptt {args.bptt}, forward + backward, "
        f"{args.device} ({args.threads} thread{'s' * (args.threads > 1)}), best of {args.repeats}"
    )
    print(f"sampled cell (seed {args.seed}): {RNNCellSpace(8).summary(sampled)}")
    print(f"{'hidden':>6}  {'model':<32}{'tokens/s':>10}  {'vs LSTM':>7}")
    for hidden in args.hidden:
        x = torch.randn(args.bptt, args.batch, hidden, device=device)
        runs = {
            "nn.LSTM": lstm_step(hidden, args.layers, x),
            "sampled cell, fused": cell_step(sampled, hidden, args.layers, x, fused=True),
            "sampled cell, step-wise autograd": cell_step(sampled, hidden, args.layers, x, fused=False),
            "paper's cell, fused": cell_step(PAPER_CELL, hidden, args.layers, x, fused=True),
            "paper's cell, step-wise autograd": cell_step(PAPER_CELL, hidden, args.layers, x, fused=False),
            "8-leaf matmuls only (floor)": matmul_floor(8, hidden, args.layers, x),
            "4-gate matmuls only (floor)": matmul_floor(4, hidden, args.layers, x),
        }
        seconds = best_seconds(runs, args.repeats, device)
        for name, s in seconds.items():
            print(f"{hidden:>6}  {name:<32}{tokens / s:>10,.0f}  {seconds['nn.LSTM'] / s:>7.2f}")
        ratio = seconds["nn.LSTM"] / seconds["sampled cell, fused"]
        print(f"hidden {hidden}: sampled cell / LSTM tokens per second = {ratio:.2f}")


if __name__ == "__main__":
    main()
