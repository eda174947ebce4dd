"""Real data available offline: scikit-learn's bundled 8x8 handwritten digits.

Used by ``lepton demo``, the quantization tests and the accuracy reports: a small CNN
trains on it in seconds, and its held-out accuracy shows what int8 quantization costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Digits:
    """The digits split into train/test; images ``[N, 1, 8, 8]`` float32 in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Digits:
    """The 1797 digits, shuffled with ``seed`` and split (stratified by class)."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    data = sk_load()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Digits(x_train, y_train, x_test, y_test)


def train_digits_cnn(data: Digits | None = None, epochs: int = 12, seed: int = 0) -> Any:
    """Train :func:`lepton_compiler.examples.zoo.digits_cnn` on the digits (a few seconds on a CPU).

    Returns the model in eval mode (batch-norm statistics frozen).
    """
    import torch

    from lepton_compiler.examples.zoo import digits_cnn

    data = data or load_digits()
    torch.manual_seed(seed)
    model = digits_cnn(seed=seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """``x`` cut into full batches of ``batch`` (a trailing partial batch is dropped)."""
    return [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]


def accuracy(predict: Any, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of ``predict`` (a batch -> logits callable) over full batches, and the
    predicted classes."""
    preds = np.concatenate([np.asarray(predict(b)).argmax(axis=1) for b in batches(x, batch)])
    return float((preds == y[:len(preds)]).mean()), preds
