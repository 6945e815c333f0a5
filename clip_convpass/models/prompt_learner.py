"""Learnable prompt contexts (CoOp / CoCoOp), shared by both trainers.

Prompts are assembled in the token-embedding space as [SOS] [ctx...] [class tokens] [.] [EOT] [pad...]
(class token "end"), or with the class in the "middle" / at the "front". Sequences are kept only up
to the longest prompt's EOT: the text encoder is causal and pools at EOT, so the cut is exact.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from clip_convpass.models.prompts import prompt_classname
from clip_convpass.models.text_encoder import TextEncoder

CLASS_POSITIONS = ("end", "middle", "front")


class PromptLearner(nn.Module):
    def __init__(self, text_encoder: TextEncoder, tokenizer: Callable, classnames: Sequence[str], n_ctx: int = 16,
                 ctx_init: str = "", csc: bool = False, class_token_position: str = "end", init_std: float = 0.02,
                 learn_init_tokens: int = 0):
        """learn_init_tokens: with ctx_init, 0 learns every token of it (CoOp: N_CTX is its token count); k > 0
        learns its first k tokens and keeps the rest as fixed words before the class name (IVLP / MaPLe /
        PromptSRC with N_CTX k: "a photo of a" with k = 2 trains "a photo" and keeps "of a")."""
        super().__init__()
        if class_token_position not in CLASS_POSITIONS:
            raise ValueError(f"class_token_position must be one of {CLASS_POSITIONS}, got {class_token_position!r}")
        device = text_encoder.token_embedding.weight.device
        embed = text_encoder.token_embedding
        n_cls = len(classnames)
        with torch.no_grad():
            if ctx_init:
                ctx_init = ctx_init.replace("_", " ").strip()
                init_tokens = tokenizer([ctx_init]).to(device)
                n_ctx = int(text_encoder.eot_indices(init_tokens)[0].item()) - 1
                if learn_init_tokens:
                    if not 1 <= learn_init_tokens <= n_ctx:
                        raise ValueError(f"{learn_init_tokens} learned context tokens from CTX_INIT {ctx_init!r}, "
                                         f"which has {n_ctx}: N_CTX must be between 1 and {n_ctx}")
                    n_ctx = learn_init_tokens
                ctx = embed(init_tokens)[0, 1:1 + n_ctx].clone()
                if csc:
                    ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
                prefix_text = ctx_init
            else:
                if n_ctx < 1:
                    raise ValueError("N_CTX must be >= 1 when CTX_INIT is empty")
                shape = (n_cls, n_ctx, text_encoder.width) if csc else (n_ctx, text_encoder.width)
                ctx = torch.empty(shape, device=device).normal_(std=init_std)
                prefix_text = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.n_cls = n_cls
        self.csc = csc
        self.class_token_position = class_token_position
        names = [prompt_classname(c) for c in classnames]
        # number of BPE tokens of each class name (between SOS and EOT)
        name_tokens = tokenizer(names).to(device)
        self.name_lens: List[int] = (text_encoder.eot_indices(name_tokens) - 1).tolist()
        tokens = tokenizer([f"{prefix_text} {n}." for n in names]).to(device)
        eot = text_encoder.eot_indices(tokens)
        seq_len = text_encoder.seq_len_for(eot)
        with torch.no_grad():
            emb = embed(tokens[:, :seq_len])
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)  # class, '.', EOT, pad
        self.register_buffer("eot_idx", eot, persistent=False)
        self.seq_len = seq_len

    def _ctx_per_class(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx [n_ctx, W] or [C, n_ctx, W] -> [C, n_ctx, W]"""
        return ctx if ctx.dim() == 3 else ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

    def assemble(self, ctx: torch.Tensor, class_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Prompt embeddings [C', L, W] for the classes in class_idx (default all) with the given context."""
        prefix, suffix = self.token_prefix, self.token_suffix
        ctx = self._ctx_per_class(ctx)
        if class_idx is not None:
            prefix, suffix, ctx = prefix[class_idx], suffix[class_idx], ctx[class_idx]
            lens = [self.name_lens[i] for i in class_idx.tolist()]
        else:
            lens = self.name_lens
        prefix = prefix.to(ctx.dtype)
        suffix = suffix.to(ctx.dtype)
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        out = []
        half = self.n_ctx // 2
        for i, n in enumerate(lens):
            name, rest = suffix[i:i + 1, :n], suffix[i:i + 1, n:]
            c = ctx[i:i + 1]
            if self.class_token_position == "middle":
                out.append(torch.cat([prefix[i:i + 1], c[:, :half], name, c[:, half:], rest], dim=1))
            else:  # front
                out.append(torch.cat([prefix[i:i + 1], name, c, rest], dim=1))
        return torch.cat(out, dim=0)

    def parts(self, ctx: torch.Tensor, class_idx: Optional[torch.Tensor] = None):
        """(shared prefix [1, P, W] or None, per-class rest [C', S, W]) of the prompts.

        With one context for all classes and the class token at the end, [SOS] + context is the same
        for every class: TextEncoder.forward_prompts then computes it once.
        """
        if ctx.dim() == 3 or self.class_token_position != "end":
            return None, self.assemble(ctx, class_idx)
        suffix = self.token_suffix if class_idx is None else self.token_suffix[class_idx]
        prefix = torch.cat([self.token_prefix[:1].to(ctx.dtype), ctx.unsqueeze(0)], dim=1)
        return prefix, suffix.to(ctx.dtype)

    def eot(self, class_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        # Moving the class token keeps every token, so EOT stays where the tokenizer put it.
        return self.eot_idx if class_idx is None else self.eot_idx[class_idx]
