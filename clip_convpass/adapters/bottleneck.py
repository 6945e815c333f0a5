"""The language-oriented bottleneck shared by AdaptFormer and the Adapter: up(drop(act(down(x)))).

Inits: "zero_up" (xavier down, zero up and biases: the block starts as the frozen one), "lora"
(AdaptFormer's code: kaiming_uniform(a=sqrt(5)) down, zero up and biases), "noah" (NOAH's Adapter, which
produced the Convpass paper's Adapter numbers: xavier on both projections, biases from N(0, 1e-6); not the
identity at init).
"""
import math

import torch
from open_clip.transformer import QuickGELU
from torch import nn

from clip_convpass.adapters.base import AdapterModule, Injection, adapted_blocks, block_width

INITS = ("zero_up", "lora", "noah")
ACTIVATIONS = {"relu": nn.ReLU, "quickgelu": QuickGELU}


class Bottleneck(AdapterModule):
    def __init__(self, dim: int, hidden: int, dropout: float, init: str = "zero_up", act: str = "relu"):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = ACTIVATIONS[act]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim)
        with torch.no_grad():
            if init == "noah":
                for layer in (self.down, self.up):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.normal_(layer.bias, std=1e-6)
            else:
                if init == "lora":
                    nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
                else:
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
    if options["init"] not in INITS:
        raise ValueError(f"INIT (bottleneck init) must be one of {INITS}, got {options['init']!r}")
    if options["act"] not in ACTIVATIONS:
        raise ValueError(f"ACT (bottleneck activation) must be one of {tuple(ACTIVATIONS)}, got {options['act']!r}")


def inject_bottlenecks(visual, options, fast_attention: bool, mode: str, name: str) -> Injection:
    """One bottleneck per block, in the MLP's slot `mode` (parallel / residual / sequential), scaled by s."""
    modules = []
    for block in adapted_blocks(visual, fast_attention):
        m = Bottleneck(block_width(block), options["hidden"], options["dropout"], options["init"], options["act"])
        block.add("mlp", mode, name, m, options["scale"])
        modules.append(m)
    return Injection(modules=modules)
