"""How fast do children train? The fast path vs a plain PyTorch loop, and children per hour per GPU.

All on one device, in one run, side by side:

1. images/s and seconds per child for a paper-size architecture (v1: 15 layers, sampled from the conv
   space with the paper's value sets) with the trainer's fast path (uint8 data resident on the device,
   augmentation there, channels-last, bf16 autocast, cudnn.benchmark) vs a plain PyTorch loop
   (a CPU-side ``DataLoader`` doing the same augmentation, fp32, NCHW);
2. children per hour with 1, 2 and 4 children training at once on the device (separate processes, as
   ``--children-per-gpu`` runs them), each training the proxy recipe;
3. the projected time for the paper's 12,800 children at the best of those rates.

Part 1 also prints what the trainer now measures on every completed child (FLOPs per image, latency at batch 1
and at the training batch size: components/trainer/costs.py) and how long measuring takes beside training.

The data is CIFAR-10-shaped (3x32x32, 45,000 train / 5,000 validation): CIFAR-10 itself with
``--dataset cifar10`` where its files are, otherwise random pixels, which train exactly as fast.

    python bench/gpu_children.py                      # on a GPU
    python bench/gpu_children.py --quick              # small sizes: every path, on a CPU, in a minute or two
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from components.trainer.batches import normalise, random_crop, random_flip
from components.trainer.costs import count_flops, measure_latency
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.model import build_model
from components.trainer.outcome import resolve_device
from components.trainer.train import TrainConfig, train_child
from controller.config import RECIPES
from controller.spaces import make_space

PAPER_CHILDREN = 12_800


def cifar_shaped(name: str, train: int, val: int, seed: int) -> DatasetSplits:
    if name == "cifar10":
        data = load_dataset("cifar10", seed=seed)
        return DatasetSplits(**{**data.__dict__, "train": (data.train[0][:train], data.train[1][:train])})
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,))

    return DatasetSplits(
        name="random-cifar-shaped",
        train=split(train),
        val=split(val),
        test=split(16),
        num_classes=10,
        in_channels=3,
        image_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.29, 0.29, 0.29),
        crop_padding=4,
        horizontal_flip=True,
    )


def paper_architecture(layers: int, num_filters: list[int], seed: int) -> dict[str, Any]:
    space = make_space("conv", num_layers=layers, num_filters=num_filters)
    return space.sample_uniform(random.Random(seed))


# -- the plain loop ------------------------------------------------------------------------------------
class Augmented(Dataset):
    """What a textbook loop does: per image, on the CPU, in DataLoader workers."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, data: DatasetSplits, augment: bool) -> None:
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)
        self.padding = data.crop_padding
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = (self.images[i].float() / 255 - self.mean) / self.std
        if self.augment:
            fill = (-self.mean / self.std).view(1, -1, 1, 1)
            image = random_flip(random_crop(image[None], self.padding, fill, self.generator), self.generator)[0]
        return image, self.labels[i]


def plain_loop(
    arch: dict, data: DatasetSplits, epochs: int, batch_size: int, device: torch.device, workers: int
) -> float:
    """Seconds to train ``epochs`` epochs (validating after each), fp32, data from a CPU DataLoader."""
    torch.manual_seed(0)
    model = build_model(arch, data.in_channels, data.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    pin = device.type == "cuda"
    train = DataLoader(
        Augmented(*data.train, data, True), batch_size, shuffle=True, num_workers=workers, pin_memory=pin,
        drop_last=True, persistent_workers=workers > 0,
    )  # fmt: skip
    val = DataLoader(Augmented(*data.val, data, False), 1024, num_workers=workers, pin_memory=pin)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for images, labels in train:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x.to(device)).argmax(1) == y.to(device)).sum()) for x, y in val)
    _sync(device)
    del correct
    return time.perf_counter() - started


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fast_child(arch: dict, data: DatasetSplits, config: TrainConfig) -> float:
    result = train_child(arch, data, config)
    if result.status != "COMPLETE":
        raise SystemExit(f"the fast path failed: {result.reason_code}: {result.reason}")
    return result.train_seconds


def measuring_costs(arch: dict, data: DatasetSplits, config: TrainConfig, device: torch.device) -> None:
    """Train one child as the search does, with a latency batch, then time measuring its costs once more."""
    batch = config.batch_size
    result = train_child(arch, data, dataclasses.replace(config, latency_batch_size=batch), keep_model=True)
    if result.status != "COMPLETE" or result.model is None:
        raise SystemExit(f"the child failed: {result.reason_code}: {result.reason}")
    model = result.model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    image = normalise(data.val[0][:1], data.mean, data.std)
    parts = {}
    for name, measure in (
        ("FLOPs", lambda: count_flops(model, image)),
        ("latency at batch 1", lambda: measure_latency(model, image, 1, fast=True)),
        (f"latency at batch {batch}", lambda: measure_latency(model, image, batch, fast=True)),
    ):
        started = time.perf_counter()
        measure()
        _sync(device)
        parts[name] = time.perf_counter() - started
    print(
        f"   costs it reports: {result.flops / 1e9:.3f} GFLOPs per image, {result.latency_seconds * 1e3:.2f} ms at "
        f"batch 1, {result.latency_batch_seconds * 1e3:.2f} ms at batch {batch}"
    )
    # train_seconds includes the trainer's own measuring, which took about as long as this one.
    measuring = sum(parts.values())
    training = result.train_seconds - measuring
    detail = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items())
    print(f"   measuring them: {measuring:.2f} s ({detail}) beside {training:.1f} s training")


# -- several children at once ------------------------------------------------------------------------
def _child_process(args: argparse.Namespace, arch: dict, children: int, barrier: Any, out: Any) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.max_at_once))
    data = cifar_shaped(args.dataset, args.train, args.val, seed=0)
    config = proxy_config(args)
    fast_child(arch, data, TrainConfig(**{**config.__dict__, "epochs": 1}))  # warm-up: CUDA context, cudnn plans
    barrier.wait()
    for _ in range(children):
        fast_child(arch, data, config)
    out.put(time.perf_counter())


def children_per_hour(args: argparse.Namespace, arch: dict, at_once: int) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(at_once + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_child_process, args=(args, arch, args.children_each, barrier, out)) for _ in range(at_once)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    ends = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(ends) - started
    return at_once * args.children_each / wall * 3600


def proxy_config(args: argparse.Namespace) -> TrainConfig:
    settings = dict(RECIPES["proxy"]) | {"epochs": args.proxy_epochs or RECIPES["proxy"]["epochs"]}
    return TrainConfig(**settings, device=args.device, fast="on")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="random", help="random (CIFAR-10-shaped pixels) or cifar10")
    parser.add_argument("--train", type=int, default=45_000, help="training images")
    parser.add_argument("--val", type=int, default=5_000, help="validation images")
    parser.add_argument("--layers", type=int, default=15, help="depth of the paper-size architecture (v1: 15)")
    parser.add_argument("--num-filters", type=int, nargs="+", default=[24, 36, 48, 64])
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per loop in part 1")
    parser.add_argument("--batch-size", type=int, default=256, help="both loops in part 1")
    parser.add_argument("--loader-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--proxy-epochs", type=int, default=None, help="default: the proxy recipe's")
    parser.add_argument("--at-once", type=int, nargs="+", default=[1, 2, 4], help="children per GPU to time")
    parser.add_argument("--children-each", type=int, default=2, help="children each process trains in part 2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU: checks every path")
    args = parser.parse_args()
    if args.quick:
        args.train, args.val, args.layers, args.num_filters = 2048, 512, 6, [16, 24]
        args.epochs, args.proxy_epochs, args.children_each, args.at_once = 1, 1, 1, [1, 2]
        args.loader_workers = min(args.loader_workers, 2)
    args.max_at_once = max(args.at_once)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    data = cifar_shaped(args.dataset, args.train, args.val, seed=0)
    arch = paper_architecture(args.layers, args.num_filters, seed=0)
    params = sum(p.numel() for p in build_model(arch, 3, 10).parameters())
    print(f"device: {name}; torch {torch.__version__}; data {data!r}")
    print(f"architecture: {args.layers} layers, {params:,} parameters (seed 0, uniform over the paper's values)")

    # 1. one child, fast path vs plain loop, same architecture, data, batch size and epochs.
    fast = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, fast="on")
    fast_child(arch, data, TrainConfig(**{**fast.__dict__, "epochs": 1}))  # warm-up
    plain_loop(arch, data, 1, args.batch_size, device, args.loader_workers) if device.type == "cuda" else None
    fast_s = fast_child(arch, data, fast)
    plain_s = plain_loop(arch, data, args.epochs, args.batch_size, device, args.loader_workers)
    images = args.epochs * args.train
    print()
    print(f"1. {args.epochs} epochs of {args.train:,} images, batch {args.batch_size}, validating every epoch")
    for label, seconds in (
        (f"plain loop (DataLoader x{args.loader_workers}, fp32):", plain_s),
        ("fast path (uint8 on device, bf16, channels-last):", fast_s),
    ):
        print(f"   {label:<50} {images / seconds:10,.0f} images/s  ({seconds:.1f} s)")
    print(f"   fast / plain: {plain_s / fast_s:.2f}x   (target >= 3x on a GPU)")
    proxy = proxy_config(args)
    child_s = fast_child(arch, data, proxy)
    plain_child_s = plain_s / args.epochs * proxy.epochs
    print(
        f"   seconds per child, proxy recipe ({proxy.epochs} epochs): fast {child_s:.1f} s, "
        f"plain {plain_child_s:.1f} s (plain: projected from its images/s)"
    )
    measuring_costs(arch, data, proxy, device)

    # 2. several children at once.
    print()
    print(f"2. children per hour, proxy recipe, {args.children_each} children per process")
    rates = {}
    for at_once in args.at_once:
        rates[at_once] = children_per_hour(args, arch, at_once)
        ratio = rates[at_once] / rates[args.at_once[0]]
        print(f"   {at_once} at once: {rates[at_once]:8,.0f} children/hour  ({ratio:.2f}x)")

    # 3. the paper's search on this device.
    best_n, best = max(rates.items(), key=lambda kv: kv[1])
    hours = PAPER_CHILDREN / best
    print()
    print(
        f"3. {PAPER_CHILDREN:,} children at {best:,.0f}/hour ({best_n} at once): {hours:.1f} h on this device "
        f"({'within' if hours <= 24 else 'over'} one day)"
    )
    if args.quick:
        print(
            f"   (--quick: a {args.layers}-layer child on {args.train:,} images for {proxy.epochs} epoch(s); "
            "this checks the paths, it is not the paper-scale projection)"
        )
    if not math.isfinite(hours):
        raise SystemExit("no rate measured")


if __name__ == "__main__":
    main()
