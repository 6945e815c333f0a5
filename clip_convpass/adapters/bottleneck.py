"""The language-oriented bottleneck shared by AdaptFormer and the (Pfeiffer) Adapter: up(drop(ReLU(down(x))))."""
from torch import nn

from .base import AdapterModule


class Bottleneck(AdapterModule):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # a fresh model computes exactly what the pretrained one does
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return self.up(self.dropout(self.act(self.down(x))))


def check_bottleneck(options) -> None:
    if options["hidden"] < 1:
        raise ValueError(f"HIDDEN (bottleneck width) must be >= 1, got {options['hidden']}")
    if not 0 <= options["dropout"] < 1:
        raise ValueError(f"DROPOUT must be in [0, 1), got {options['dropout']}")
