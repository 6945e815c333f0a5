"""The language-oriented bottleneck shared by AdaptFormer and the (Pfeiffer) Adapter: up(drop(ReLU(down(x))))."""
from torch import nn

from clip_convpass.adapters.base import AdapterModule, Injection, adapted_blocks


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


def inject_bottlenecks(visual, options, fast_attention: bool, mode: str, name: str) -> Injection:
    """One bottleneck per block, beside (parallel) or after (sequential) the MLP, scaled by s."""
    modules = []
    for block in adapted_blocks(visual, fast_attention):
        m = Bottleneck(visual.transformer.width, options["hidden"], options["dropout"])
        block.add("mlp", mode, name, m, options["scale"])
        modules.append(m)
    return Injection(modules=modules)
