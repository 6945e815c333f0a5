"""The cuts of a small run's fixed costs (issue: scale): they must never change what a run computes."""
import os

import torch

from clip_convpass.engine.checkpoint import latest_checkpoint, load_checkpoint
from clip_convpass.engine.runner import run
from clip_convpass.models import clip_loader

COOP = "configs/trainers/CoOp/vit_b16_fewshot.yaml"


def test_a_reused_backbone_equals_a_fresh_load_and_shares_nothing(cfg_factory, tiny_weights, tmp_path):
    cfg = cfg_factory(opts=["MODEL.PRETRAINED", tiny_weights])
    clip_loader._LOADED.clear()
    clip_loader.load_clip_from_cfg(cfg)
    assert not clip_loader._LOADED  # a run outside a grid keeps no copy of its model
    reuse = clip_loader.reuse_loaded_models()
    reuse.__enter__()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = clip_loader.load_clip_from_cfg(cfg).model
    assert torch.equal(torch.get_rng_state(), state)  # building the model leaves the process's stream alone
    second = clip_loader.load_clip_from_cfg(cfg).model  # reused
    assert torch.equal(torch.get_rng_state(), state)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        next(first.parameters()).add_(1.0)  # a run changing its model in place
    assert torch.equal(next(second.parameters()), b[next(iter(b))])
    assert torch.equal(next(clip_loader.load_clip_from_cfg(cfg).model.parameters()), b[next(iter(b))])
    copy = tmp_path / "tiny-copy.pt"
    copy.write_bytes(open(tiny_weights, "rb").read())
    other = cfg_factory(opts=["MODEL.PRETRAINED", str(copy)])
    clip_loader.load_clip_from_cfg(other)
    os.utime(copy, ns=(0, 0))  # the file changed since: loaded again, not reused
    clip_loader.load_clip_from_cfg(other)
    assert list(clip_loader._LOADED)[0][2][2] == 0 and len(clip_loader._LOADED) == 1
    random_cfg = cfg_factory(opts=["MODEL.PRETRAINED", "none"])
    x = clip_loader.load_clip_from_cfg(random_cfg).model
    torch.manual_seed(6)
    y = clip_loader.load_clip_from_cfg(random_cfg).model
    assert not torch.equal(next(x.parameters()), next(y.parameters()))  # random weights: drawn from the seed,
    assert list(clip_loader._LOADED)[0][1] == str(copy)  # never kept for reuse
    reuse.__exit__(None, None, None)
    assert not clip_loader._LOADED


def test_a_run_after_another_in_one_process_equals_it_run_alone(cfg_factory, tiny_weights, tmp_path):
    """CoOp draws its contexts after loading CLIP: a reused backbone must leave them as a fresh load does."""
    def trained(out, seed):
        cfg = cfg_factory(config_file=COOP, output_dir=tmp_path / out,
                          opts=["MODEL.PRETRAINED", tiny_weights, "SEED", str(seed), "DATASET.NUM_SHOTS", "2",
                                "OPTIM.MAX_EPOCH_BY_SHOTS", "", "OPTIM.MAX_EPOCH", "1"])
        run(cfg)
        return load_checkpoint(latest_checkpoint(tmp_path / out))["state_dict"]

    clip_loader._LOADED.clear()
    alone = trained("alone", 1)
    with clip_loader.reuse_loaded_models():  # as in a grid process
        trained("other", 2)
        assert len(clip_loader._LOADED) == 1
        after = trained("after", 1)
    assert alone.keys() == after.keys() and all(torch.equal(alone[k], after[k]) for k in alone)
