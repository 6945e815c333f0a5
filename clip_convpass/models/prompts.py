"""Class names, prompt templates and the zero-shot text classifier (one implementation for all trainers)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

import torch
import torch.nn.functional as F
from open_clip import zero_shot_metadata

from clip_convpass.config import ConfigError
from clip_convpass.models.text_encoder import TextEncoder
from clip_convpass.utils.text import prompt_classname  # noqa: F401  (re-exported: prompts use it)


def _as_format_strings(templates) -> List[str]:
    # open_clip stores templates as lambdas; "{}" turns them back into format strings.
    return [t("{}") if callable(t) else t for t in templates]


TEMPLATE_SETS: Dict[str, List[str]] = {
    "single": ["a photo of a {}."],
    "ensemble7": _as_format_strings(zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES),
    "ensemble80": _as_format_strings(zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES),
}
# PromptSRC's textual diversity (muzairkhattak/PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES): the
# first 60 of OpenAI's 80, with "a photo of a {}." moved to the front (tests/trainers check the transcription)
TEMPLATE_SETS["promptsrc60"] = ["a photo of a {}."] + [t for t in TEMPLATE_SETS["ensemble80"][:60]
                                                        if t != "a photo of a {}."]


# The training dataset's own templates (DatasetBase.TEMPLATES: CoOp's; TIP_TEMPLATES: Tip-Adapter's).
DATASET_TEMPLATES = ("dataset", "dataset_tip")
TEMPLATE_CHOICES = tuple(sorted(TEMPLATE_SETS)) + DATASET_TEMPLATES


def check_templates(spec: str, key: str) -> None:
    if spec not in TEMPLATE_CHOICES:
        raise ConfigError(f"{key} must be one of {list(TEMPLATE_CHOICES)}, got {spec!r}")


def resolve_templates(spec: str, dataset_cls) -> List[str]:
    """A TEMPLATES value as format strings; "dataset"/"dataset_tip" read the dataset's declaration."""
    if spec in DATASET_TEMPLATES:
        return get_templates(dataset_cls.template_spec(spec))
    return get_templates(spec)


def get_templates(spec: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(spec, str):
        if spec not in TEMPLATE_SETS:
            raise ValueError(f"Unknown template set {spec!r}; choices: {sorted(TEMPLATE_SETS)}")
        return list(TEMPLATE_SETS[spec])
    templates = list(spec)
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"Each template needs a '{{}}' placeholder for the class name; got {bad or templates}")
    return templates


def template_info(templates, resolved: Sequence[str] | None = None) -> dict:
    """What results.json records of a template set: its name (e.g. "dataset"), its text and a hash of it."""
    text_list = list(resolved) if resolved is not None else get_templates(templates)
    return {"templates": templates if isinstance(templates, str) else "custom",
            "template_text": text_list[0] if len(text_list) == 1 else f"{len(text_list)} templates",
            "templates_sha256": hashlib.sha256("\n".join(text_list).encode()).hexdigest()[:16]}


def read_classnames_file(path: Union[str, Path]) -> Dict[str, str]:
    """CoOp's classnames.txt: one 'wnid class name' per line."""
    out: Dict[str, str] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(" ", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'wnid class name', got {line!r}")
            out[parts[0]] = parts[1].strip()
    return out


@torch.no_grad()
def ensemble_text_features(text_encoder: TextEncoder, tokenizer: Callable, classnames: Sequence[str],
                           templates: Union[str, Sequence[str]], device: Union[str, torch.device] = "cpu",
                           chunk: int = 1000, normalize_each: bool = True) -> torch.Tensor:
    """[C, D] mean over templates of each class's text embedding, not normalised at the end; normalize_each:
    each template's embedding is normalised first (CLIP's ensembling) or taken raw (TaskRes's base)."""
    templates = get_templates(templates)
    total = None
    for template in templates:
        tokens = tokenizer([template.format(prompt_classname(c)) for c in classnames]).to(device)
        if normalize_each:
            emb = text_encoder.encode_normalized(tokens, chunk=chunk)
        else:
            emb = torch.cat([text_encoder(tokens[i:i + chunk]).float() for i in range(0, len(tokens), chunk)])
        total = emb if total is None else total + emb
    return total / len(templates)


def build_text_classifier(
    text_encoder: TextEncoder,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Union[str, Sequence[str]],
    device: Union[str, torch.device] = "cpu",
    chunk: int = 1000,
) -> torch.Tensor:
    """[C, D] classifier: per template normalise each class embedding, average over templates, re-normalise."""
    return F.normalize(ensemble_text_features(text_encoder, tokenizer, classnames, templates, device, chunk), dim=-1)
