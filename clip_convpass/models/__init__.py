"""Building blocks no single method owns: CLIP loading, attention, blocks with adapter slots, the text
encoder, prompts, the prompt learner, heads and the probe fit."""
