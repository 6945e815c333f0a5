"""CLIP's text tower as a standalone module, shared by every trainer.

The text transformer is causal and pools at the end-of-text token, so positions after the longest
prompt's EOT cannot influence any pooled feature: sequences are cut there (exact, and much faster
than always running all 77 positions).

For the same reason, positions shared by every prompt of a batch ([SOS] + CoOp's learned context)
have the same hidden states in all of them: `forward_shared_prefix` computes them once and lets each
prompt's own tokens attend to them (exact as well).

Deep prompts (IVLP, MaPLe, PromptSRC): `deep[j]` [n, W] replaces the hidden states of positions 1..n (the
learned context) at the input of block j + 1, as the reference blocks do. Those positions are the same for
every prompt and lie before every EOT, so both shortcuts stay exact with them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clip_convpass.models.attention import is_plain_self_attention, output_projection, qkv_heads


def open_clip_block(block: nn.Module) -> nn.Module:
    """The open_clip block itself, inside a fused-attention wrapper or not."""
    return getattr(block, "block", block)


def replace_context(x: torch.Tensor, prompt: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """x with positions 1..n (after [SOS]) replaced by prompt [n, W], the same for every sequence."""
    n = prompt.shape[0]
    if not batch_first:
        return torch.cat([x[:1], prompt.to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + n:]], dim=0)
    return torch.cat([x[:, :1], prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)


class TextEncoder(nn.Module):
    def __init__(self, clip_model: nn.Module, truncate: bool = True, share_prefix: bool = True):
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
        self.share_prefix = share_prefix and self.truncate and self._plain_blocks()

    def _plain_blocks(self) -> bool:
        t = self.transformer
        return getattr(t, "batch_first", False) and all(
            hasattr(b, "attention") and is_plain_self_attention(b.attn) for b in map(open_clip_block, t.resblocks))

    def _has_qkv_adapters(self) -> bool:
        """LoRA in this tower (CLIP-LoRA): the shared-prefix path reads the blocks' frozen projections itself."""
        return any(getattr(b, "qkv_adapter", None) is not None for b in self.transformer.resblocks)

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def eot_indices(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
        raise ValueError(f"Unsupported text pool type {self.pool_type!r}")

    def forward_embeddings(self, x: torch.Tensor, eot_idx: torch.Tensor,
                           deep: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Encode token embeddings x [B, L, width] (no positional embedding yet); pool at eot_idx.
        deep: per-block prompts (see the module docstring)."""
        seq_len = x.shape[1]
        x = x + self.positional_embedding[:seq_len].to(x.dtype)
        mask = self.attn_mask[:seq_len, :seq_len] if self.attn_mask is not None else None
        if deep:
            x = self._blocks_with_deep_prompts(x, mask, deep)
        else:
            x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot_idx])

    def _blocks_with_deep_prompts(self, x: torch.Tensor, mask, deep: Sequence[torch.Tensor]) -> torch.Tensor:
        batch_first = getattr(self.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= len(deep):
                x = replace_context(x, deep[i - 1], batch_first)
            x = block(x, attn_mask=mask)
        return x if batch_first else x.transpose(0, 1)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward_shared_prefix(self, prefix: torch.Tensor, rest: torch.Tensor, eot_idx: torch.Tensor,
                              deep: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Encode prompts cat(prefix, rest[i]) for every i; prefix [1, P, W] is computed once.

        rest [C, S, W]; eot_idx [C] are positions in the whole prompt (all >= P). Token embeddings only:
        positional embeddings are added here. deep: per-block prompts, inside the prefix.
        """
        p, (c, s_len, _) = prefix.shape[1], rest.shape
        if int(eot_idx.min()) < p:
            raise ValueError("every prompt's EOT must come after the shared prefix")
        deep = deep or ()
        if any(1 + d.shape[0] > p for d in deep):
            raise ValueError("deep prompts must lie inside the shared prefix ([SOS] + context)")
        pos = self.positional_embedding.to(rest.dtype)
        xp, xs = prefix + pos[:p], rest + pos[p:p + s_len]
        mask_p = self.attn_mask[:p, :p].to(rest.dtype)
        mask_s = self.attn_mask[p:p + s_len, :p + s_len].to(rest.dtype)  # rows of the full causal mask
        for i, blk in enumerate(map(open_clip_block, self.transformer.resblocks)):
            if 1 <= i <= len(deep):
                xp = replace_context(xp, deep[i - 1], True)
            qkv_p = qkv_heads(blk.attn, blk.ln_1(xp))
            qkv_s = qkv_heads(blk.attn, blk.ln_1(xs))
            # each prompt's own tokens attend to the shared prefix's keys/values and to their own
            k = torch.cat([qkv_p[1].expand(c, -1, -1, -1), qkv_s[1]], dim=2)
            v = torch.cat([qkv_p[2].expand(c, -1, -1, -1), qkv_s[2]], dim=2)
            out_p = F.scaled_dot_product_attention(qkv_p[0], qkv_p[1], qkv_p[2], attn_mask=mask_p)
            out_s = F.scaled_dot_product_attention(qkv_s[0], k, v, attn_mask=mask_s)
            xp = xp + blk.ls_1(output_projection(blk.attn, out_p))
            xs = xs + blk.ls_1(output_projection(blk.attn, out_s))
            xp = xp + blk.ls_2(blk.mlp(blk.ln_2(xp)))
            xs = xs + blk.ls_2(blk.mlp(blk.ln_2(xs)))
        xs = self.ln_final(xs)
        return self._project(xs[torch.arange(c, device=xs.device), eot_idx - p])

    def forward_prompts(self, prefix, rest: torch.Tensor, eot_idx: torch.Tensor,
                        deep: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Prompts given as a shared prefix [1, P, W] (or None) and per-prompt rest [C, S, W]; deep: per-block
        prompts (module docstring)."""
        if prefix is None:
            return self.forward_embeddings(rest, eot_idx, deep)
        if self.share_prefix and not self._has_qkv_adapters():
            return self.forward_shared_prefix(prefix, rest, eot_idx, deep)
        return self.forward_embeddings(torch.cat([prefix.expand(rest.shape[0], -1, -1), rest], dim=1), eot_idx, deep)

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
