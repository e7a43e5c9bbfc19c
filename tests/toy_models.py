"""Small hand-written CNNs that exercise the channel graph: concatenation, flatten into Linear,
a branch that rejoins, depthwise convs, and ops the graph must refuse."""
import torch
from torch import nn


class CatNet(nn.Module):
    """Two branches concatenated along channels, a BN over the concatenation, flatten into Linear."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(3, 6, 1, bias=True)
        self.bn_cat = nn.BatchNorm2d(14)
        self.conv_c = nn.Conv2d(14, 10, 3, padding=1)
        self.bn_c = nn.BatchNorm2d(10)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        a = torch.relu(self.bn_a(self.conv_a(x)))
        b = self.conv_b(x)
        y = torch.relu(self.bn_cat(torch.cat([a, b], dim=1)))
        y = self.pool(torch.relu(self.bn_c(self.conv_c(y))))
        return self.fc(y.view(y.size(0), -1))


class BranchNet(nn.Module):
    """A stem, two branches (plain conv; depthwise + pointwise) that rejoin by addition,
    a second concatenation of the stream with itself, global pooling and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(12)
        self.left = nn.Conv2d(12, 12, 3, padding=1, bias=False)
        self.bn_l = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn_dw = nn.BatchNorm2d(12)
        self.pw = nn.Conv2d(12, 12, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(12)
        self.head = nn.Conv2d(24, 16, 1)
        self.fc1 = nn.Linear(16, 20)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(20, 4)

    def forward(self, x):
        s = nn.functional.relu(self.bn0(self.stem(x)))
        left = self.bn_l(self.left(s))
        right = self.bn_pw(self.pw(nn.functional.relu6(self.bn_dw(self.dw(s)))))
        s = torch.relu(s + left + right)
        y = self.head(torch.cat([s, s * 0.5], 1))
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.fc2(self.drop(torch.relu(self.fc1(y))))


class ShuffleNet(nn.Module):
    """A channel shuffle (view + transpose): the graph must keep those channels whole."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


TOYS = {"catnet": CatNet, "branchnet": BranchNet}


class SharedBN(nn.Module):
    """One BatchNorm applied to two different conv outputs: its entry k serves both, so the two
    convs' channels are one DFC."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 6, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.conv_a2 = nn.Conv2d(6, 4, 1)
        self.conv_b2 = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        a = self.conv_a2(torch.relu(self.bn(self.conv_a(x))))
        b = self.conv_b2(torch.relu(self.bn(self.conv_b(x))))
        y = torch.cat([a, b], 1).mean((2, 3))
        return self.fc(y)


class ChannelPad(nn.Module):
    """Zero-padding along the channel dimension (option-A shortcut style): the padded channels
    have no producer, so the stream must stay whole."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        y = self.conv2(x) + nn.functional.pad(x, (0, 0, 0, 0, 2, 2))
        return self.conv3(torch.relu(y))
