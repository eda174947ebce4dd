"""Reference models built in the repository (random weights, fixed seed).

Used by ``lepton demo``, the tests and ``benchmarks/``; no download is ever needed.
"""

from __future__ import annotations

from typing import Any


def _torch():
    import torch

    return torch


def _randomize_batch_norm(model: Any, seed: int) -> None:
    """Give batch-norm layers non-trivial statistics so folding them is really exercised."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)


def mlp(in_features: int = 64, hidden: int = 128, out_features: int = 10, depth: int = 3,
        seed: int = 0) -> Any:
    """A ReLU MLP: ``depth`` linear layers."""
    torch = _torch()
    torch.manual_seed(seed)
    layers: list[Any] = []
    width = in_features
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    layers.append(torch.nn.Linear(width, out_features))
    return torch.nn.Sequential(*layers).eval()


def small_cnn(num_classes: int = 10, width: int = 16, seed: int = 0) -> Any:
    """Conv, batch-norm, ReLU, max and average pooling, a residual add, flatten, linear.

    Takes ``[N, 3, 16, 16]`` images.
    """
    torch = _torch()
    nn = torch.nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, padding=1)
            self.bn0 = nn.BatchNorm2d(width)
            self.pool = nn.MaxPool2d(2)
            self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.avg = nn.AvgPool2d(2)
            self.fc = nn.Linear(width * 4 * 4, num_classes)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn0(self.stem(x))))
            y = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(x + self.bn2(self.conv2(y)))
            return self.fc(torch.flatten(self.avg(x), 1))

    torch.manual_seed(seed)
    model = SmallCNN()
    _randomize_batch_norm(model, seed)
    return model.eval()


def transformer_block(dim: int = 64, heads: int = 4, ff: int = 128, seed: int = 0) -> Any:
    """A pre-norm transformer encoder block: layer norm, multi-head attention, GELU MLP.

    Takes ``[N, seq, dim]``.
    """
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(dim)
            self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))

        def forward(self, x):
            h = self.ln1(x)
            a, _ = self.attn(h, h, h, need_weights=False)
            x = x + a
            return x + self.ff(self.ln2(x))

    torch.manual_seed(seed)
    return Block().eval()


def resnet18(num_classes: int = 1000, seed: int = 0) -> Any:
    """ResNet-18 (the torchvision architecture), random weights. Takes ``[N, 3, 224, 224]``."""
    torch = _torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            blocks = []
            cin = 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*blocks)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            x = self.avgpool(self.layers(x))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(seed)
    model = ResNet18()
    _randomize_batch_norm(model, seed)
    return model.eval()


def digits_cnn(width: int = 16, num_classes: int = 10, seed: int = 0) -> Any:
    """A small residual CNN for 8x8 single-channel digit images (``[N, 1, 8, 8]``): conv,
    batch-norm, ReLU, a residual add, max pooling, flatten and two linear layers.

    Untrained (random weights, fixed seed);
    :func:`lepton_compiler.examples.datasets.train_digits_cnn`
    trains it on scikit-learn's bundled digits.
    """
    torch = _torch()
    nn = torch.nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
            self.bn0 = nn.BatchNorm2d(width)
            self.conv1 = nn.Conv2d(width, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(2 * width * 16, 64)
            self.fc2 = nn.Linear(64, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn0(self.stem(x)))
            x = torch.relu(x + self.conv1(x))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc2(x)

    torch.manual_seed(seed)
    model = DigitsCNN()
    _randomize_batch_norm(model, seed)
    return model.eval()


def linear_block(dim: int = 64, hidden: int = 128, seed: int = 0) -> Any:
    """An integer-only attention-style block on ``[N, T, dim]``: query/key/value projections,
    the score and value products (``relu(q k^T) v``, activation x activation), an output
    projection with a residual add, and a ReLU MLP with a residual — every op quantizable
    (softmax and layer norm, which stay float, are left out)."""
    torch = _torch()
    nn = torch.nn

    class LinearBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
            self.o = nn.Linear(dim, dim)
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x):
            scores = torch.relu(self.q(x) @ self.k(x).transpose(1, 2))
            h = x + self.o(scores @ self.v(x))
            return h + self.fc2(torch.relu(self.fc1(h)))

    torch.manual_seed(seed)
    return LinearBlock().eval()


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, seed: int = 0) -> Any:
    """MobileNetV2 (inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6,
    residual adds), the standard architecture; ``width`` scales every layer's channels."""
    settings = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3),
                (6, 96, 3, 1, 3), (6, 160, 3, 2, 3), (6, 320, 1, 1, 3)]
    return _inverted_residual_net(settings, num_classes, width, seed)


def efficientnet_lite(num_classes: int = 1000, width: float = 1.0, seed: int = 0) -> Any:
    """An EfficientNet-Lite0-style network: MobileNetV2's inverted residual blocks with
    EfficientNet-B0's stages (3x3 and 5x5 depthwise convolutions), ReLU6 and no
    squeeze-and-excitation, as the Lite variants are built for integer accelerators."""
    settings = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
    return _inverted_residual_net(settings, num_classes, width, seed)


def _inverted_residual_net(settings: list[tuple[int, int, int, int, int]], num_classes: int,
                           width: float, seed: int) -> Any:
    """Stem conv, inverted residual stages ``(expand, channels, repeats, stride, kernel)``,
    a 1x1 head to 1280 channels, global average pool and a linear classifier."""
    torch = _torch()
    nn = torch.nn

    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1,
                act: bool = True) -> list:
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return [*layers, nn.ReLU6()] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, k, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, 1, act=False)
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    torch.manual_seed(seed)
    cin = ch(32)
    layers: list[Any] = conv_bn(3, cin, 3, 2)
    for expand, c, repeats, stride, k in settings:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, ch(c), stride if i == 0 else 1, expand, k))
            cin = ch(c)
    last = max(1280, ch(1280))
    layers += conv_bn(cin, last, 1, 1)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(last, num_classes))
    _randomize_batch_norm(model, seed)
    return model.eval()


def bert_encoder(layers: int = 4, hidden: int = 256, heads: int = 4, ff: int = 1024,
                 seed: int = 0) -> Any:
    """A BERT-style encoder: ``layers`` post-norm blocks of multi-head self-attention (separate
    query/key/value projections, scaled softmax) and a GELU feed-forward, each with a residual
    add and layer norm. Takes the embedded sequence ``[N, seq, hidden]``."""
    torch = _torch()
    nn = torch.nn
    head_dim = hidden // heads

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(hidden, hidden)
            self.k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, hidden)
            self.o = nn.Linear(hidden, hidden)
            self.ln1 = nn.LayerNorm(hidden)
            self.fc1 = nn.Linear(hidden, ff)
            self.fc2 = nn.Linear(ff, hidden)
            self.ln2 = nn.LayerNorm(hidden)

        def split(self, x):
            n, t, _ = x.shape
            return x.reshape(n, t, heads, head_dim).permute(0, 2, 1, 3)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
            p = torch.softmax(q @ k.transpose(-1, -2) * (head_dim ** -0.5), dim=-1)
            a = (p @ v).permute(0, 2, 1, 3).reshape(n, t, hidden)
            x = self.ln1(x + self.o(a))
            return self.ln2(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))

    torch.manual_seed(seed)
    return nn.Sequential(*[Layer() for _ in range(layers)]).eval()
