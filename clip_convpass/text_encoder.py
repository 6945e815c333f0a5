"""CLIP's text tower as a standalone module, shared by every trainer.

The text transformer is causal and pools at the end-of-text token, so positions after the longest
prompt's EOT cannot influence any pooled feature: sequences are cut there (exact, and much faster
than always running all 77 positions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, clip_model: nn.Module, truncate: bool = True):
        super().__init__()
        src = clip_model.text if hasattr(clip_model, "text") else clip_model
        if getattr(src, "cls_emb", None) is not None:
            raise ValueError("Text towers with an appended class token (CoCa) are not supported")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        self.register_buffer("attn_mask", src.attn_mask, persistent=False)
        self.pool_type = getattr(src, "text_pool_type", None) or getattr(src, "pool_type", "argmax")
        self.eos_id = getattr(src, "text_eos_id", None) or getattr(src, "eos_id", None)
        # Cutting is exact only for a causal mask with EOT pooling.
        self.truncate = truncate and self.attn_mask is not None and self.pool_type in ("argmax", "eos")

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def eot_indices(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
        raise ValueError(f"Unsupported text pool type {self.pool_type!r}")

    def forward_embeddings(self, x: torch.Tensor, eot_idx: torch.Tensor) -> torch.Tensor:
        """Encode token embeddings x [B, L, width] (no positional embedding yet); pool at eot_idx."""
        seq_len = x.shape[1]
        x = x + self.positional_embedding[:seq_len].to(x.dtype)
        mask = self.attn_mask[:seq_len, :seq_len] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_idx]
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def seq_len_for(self, eot_idx: torch.Tensor) -> int:
        return int(eot_idx.max().item()) + 1 if self.truncate else self.context_length

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        eot = self.eot_indices(tokens)
        tokens = tokens[:, : self.seq_len_for(eot)]
        return self.forward_embeddings(self.token_embedding(tokens), eot)

    @torch.no_grad()
    def encode_normalized(self, tokens: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        out = [F.normalize(self(tokens[i : i + chunk]).float(), dim=-1) for i in range(0, tokens.shape[0], chunk)]
        return torch.cat(out)
