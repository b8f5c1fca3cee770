"""srgan.train's pieces: pretrain_step, gan_step, save_checkpoint/resume, resume_config, and the
DDP gradient all-reduce of fit() under two gloo processes (torchrun runs this file as the worker)."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import srgan.train as train
from srgan.errors import ConfigError
from srgan.losses import discriminator_loss_terms, generator_adversarial_loss, generator_loss, pixel_loss
from srgan.models import Discriminator, Generator, GeneratorConfig
from srgan.train import TrainConfig, gan_step, loss_weights, pretrain_step, resume, resume_config, save_checkpoint
from helpers import make_photos

pytestmark = pytest.mark.usefixtures("one_thread")

GAN_LOSSES = ("bce", "relativistic", "wgan-gp")
ONLY_ADVERSARIAL = dict(content_weight=0.0, tv_weight=0.0, adversarial_weight=1.0)


def tiny_models(seed=0):
    """(G, D, opt_g, opt_d): a 1-block, 8-channel x2 generator and an 8-wide discriminator, Adam lr 1e-4."""
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(scale=2, channels=8, blocks=1)).train()
    d = Discriminator(in_channels=3, base_channels=8).train()
    return g, d, train._adam(g.parameters(), 1e-4), train._adam(d.parameters(), 1e-4)


def batch(seed=1, b=4):
    """A fixed (x, y): (b, 3, 8, 8) input and (b, 3, 16, 16) target in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g), torch.rand(b, 3, 16, 16, generator=g)


def adversarial(g, d, x, y, kind):
    """G's adversarial loss on (x, y) against a fixed D (no parameter changes)."""
    with torch.no_grad():
        real = d(y) if kind == "relativistic" else None
        return float(generator_adversarial_loss(real, d(g(x)), kind))


def d_total(d, x_sr, y, kind, weights):
    with torch.no_grad() if kind != "wgan-gp" else torch.enable_grad():  # the penalty needs grad of D
        total, _ = discriminator_loss_terms(d, y, x_sr, gan_loss=kind, weights=weights,
                                            generator=torch.Generator().manual_seed(7))
    return float(total.detach())


@pytest.mark.parametrize("kind", GAN_LOSSES)
def test_gan_step_moves_g_down_the_adversarial_loss_and_d_down_its_loss(kind):
    g, d, opt_g, opt_d = tiny_models()
    x, y = batch()
    config = TrainConfig(gan_loss=kind, **ONLY_ADVERSARIAL)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    with torch.no_grad():
        sr0 = g0(x)
    terms = gan_step(g, d, opt_g, opt_d, x, y, config, rng=torch.Generator().manual_seed(7))

    assert all(not torch.equal(p0, p1) for p0, p1 in zip(g0.parameters(), g.parameters()))  # every G weight moves
    unmoved_d = {n for (n, p0), p1 in zip(d0.named_parameters(), d.parameters()) if torch.equal(p0, p1)}
    assert unmoved_d <= {"classifier.2.bias"}  # D's last bias cancels out of the relativistic and Wasserstein losses
    # G stepped against the updated D: on the same batch and that D, its adversarial loss is lower
    assert adversarial(g, d, x, y, kind) < adversarial(g0, d, x, y, kind)
    # D stepped on (y, G_before(x)): there its own loss is lower
    assert d_total(d, sr0, y, kind, loss_weights(config)) < d_total(d0, sr0, y, kind, loss_weights(config))
    assert set(terms) == {"adversarial", "generator", "d_loss", "d_real", "d_fake", "grad_norm_g", "grad_norm_d"} \
        | ({"gp"} if kind == "wgan-gp" else set())
    assert float(terms["generator"]) == pytest.approx(float(terms["adversarial"]))  # weight 1, the only term


def test_gan_step_terms_are_the_losses_of_the_batch():
    g, d, opt_g, opt_d = tiny_models()
    x, y = batch()
    config = TrainConfig(content_loss="mse", grad_clip=0.0)
    g0 = copy.deepcopy(g)
    terms = gan_step(g, d, opt_g, opt_d, x, y, config)
    with torch.no_grad():
        sr0 = g0(x)
    assert float(terms["content"]) == pytest.approx(float(pixel_loss(sr0, y)), rel=1e-5)  # SRGAN-MSE
    w = loss_weights(config)
    expected = w.content * terms["content"] + w.adversarial * terms["adversarial"] + w.tv * terms["tv"]
    assert float(terms["generator"]) == pytest.approx(float(expected), rel=1e-5)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g.parameters()]))
    assert float(terms["grad_norm_g"]) == pytest.approx(float(norm))  # grad_clip 0: the norm, unclipped


def test_gan_step_with_vgg_content_and_bf16():
    from srgan.losses import VGGContentLoss

    g, d, opt_g, opt_d = tiny_models()
    x, y = batch()
    content = VGGContentLoss(layer="relu2_2", weights=None).eval()
    terms = gan_step(g, d, opt_g, opt_d, x, y, TrainConfig(), content=content, amp=True)
    assert all(torch.isfinite(v) for v in terms.values()) and float(terms["content"]) > 0


def test_pretrain_step_lowers_the_pixel_loss_of_the_batch():
    g, _, opt_g, _ = tiny_models()
    x, y = batch()
    g0 = copy.deepcopy(g)
    for kind in ("mse", "l1"):
        terms = pretrain_step(g, opt_g, x, y, TrainConfig(pixel_loss=kind, grad_clip=1e-3))
        with torch.no_grad():
            before, after = float(pixel_loss(g0(x), y, kind)), float(pixel_loss(g(x), y, kind))
        assert float(terms["pixel"]) == pytest.approx(before, rel=1e-5)  # the loss of the step's own forward
        assert after < before
        clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g.parameters()]))
        assert float(terms["grad_norm_g"]) > 1e-2 and clipped <= 1e-3 * (1 + 1e-5)  # the norm before clipping
        g0 = copy.deepcopy(g)


def test_save_checkpoint_then_resume_continues_bit_identically(tmp_path):
    config = TrainConfig(pretrain_steps=1, gan_steps=3, seed=5)
    g, d, opt_g, _ = tiny_models()
    d, opt_d = train._new_discriminator(config, 3, torch.device("cpu"), torch.contiguous_format)
    x, y = batch()
    gan_step(g, d, opt_g, opt_d, x, y, config)
    save_checkpoint(tmp_path / "ckpt.safetensors", step=2, config=config, generator=g, opt_g=opt_g,
                    discriminator=d, opt_d=opt_d, wall_time=12.5)
    state = train.load_state(tmp_path / "ckpt.safetensors")
    assert state["phase"] == "gan" and state["config"]["gan_steps"] == 3

    g2, _, opt_g2, _ = tiny_models(seed=99)  # other weights, fresh Adam: all must come from the file
    torch.manual_seed(1234)
    step, wall, d2, opt_d2 = resume(state, config, g2, opt_g2)
    assert (step, wall) == (2, 12.5) and torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    for a, b in ((g, g2), (d, d2)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # the next step is the same from the original objects and from the restored ones
    x, y = batch(seed=2)
    t1 = gan_step(g, d, opt_g, opt_d, x, y, config)
    t2 = gan_step(g2, d2, opt_g2, opt_d2, x, y, config)
    assert all(torch.equal(t1[k], t2[k]) for k in t1)
    assert all(torch.equal(p, q) for p, q in zip(g.parameters(), g2.parameters()))

    g3, _, opt_g3, _ = tiny_models()
    save_checkpoint(tmp_path / "pre.safetensors", step=1, config=config, generator=g3, opt_g=opt_g3)
    pre = train.load_state(tmp_path / "pre.safetensors")
    assert pre["phase"] == "pretrain" and resume(pre, config, g3, opt_g3)[2:] == (None, None)


def test_resume_config_is_the_one_merge_rule():
    stored = TrainConfig(hr="data", out="run", scale=2, blocks=1, channels=8, preset="bicubic", batch_size=2,
                         pretrain_steps=5, val_every=7, command="srgan train ...")
    merged = resume_config(TrainConfig(out="run", pretrain_steps=9, device="cpu", resume=True), stored)
    assert merged == TrainConfig(**{**stored.__dict__, "pretrain_steps": 9, "device": "cpu", "resume": True})
    with pytest.raises(ConfigError, match=r"batch_size=8 \(run has 2\), gan_loss='wgan-gp' \(run has 'bce'\)"):
        resume_config(TrainConfig(out="run", batch_size=8, gan_loss="wgan-gp"), stored)


# ----------------------------------------------------------------------------- two gloo ranks

ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")


def test_ddp_gradients_are_identical_across_ranks_after_the_all_reduce(tmp_path):
    """fit() under torchrun: each rank's own batch gives its own gradients; after the all-reduce
    (DDP's for G, fit's for D) both ranks hold the same gradients, the mean of the two."""
    hr = make_photos(tmp_path / "train", 4, size=32)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, str(hr), str(tmp_path)]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"grads_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [rec["phase"] for rec in ranks[0]] == [rec["phase"] for rec in ranks[1]] == ["pretrain", "gan"]
    checked = 0
    for a, b in zip(*ranks):
        for net in ("G", "D") if a["phase"] == "gan" else ("G",):
            local_a, local_b, reduced_a, reduced_b = a[f"{net}_local"], b[f"{net}_local"], a[net], b[net]
            assert any(not torch.equal(local_a[k], local_b[k]) for k in local_a), f"{net}: same data on both ranks"
            for k in reduced_a:
                assert torch.equal(reduced_a[k], reduced_b[k]), f"{a['phase']} {net}.{k} differs across ranks"
                torch.testing.assert_close(reduced_a[k], (local_a[k] + local_b[k]) / 2, rtol=1e-4, atol=1e-9)
                checked += 1
    assert checked > 20


def _grads(module) -> dict:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _record_gradients_under_torchrun(hr: str, out: str) -> None:
    """The torchrun worker: a tiny fit() whose steps also save this rank's gradients.

    Before each step, the rank's own (pre-reduce) gradients are computed on copies of the
    networks; after it, the gradients the step left on G and D (after the all-reduce; no
    clipping, so they are the raw means).
    """
    real_pretrain_step, real_gan_step = train.pretrain_step, train.gan_step
    records = []

    def plain(generator):  # DDP's wrapper holds the module; a bare generator when fit forgot to wrap it
        return getattr(generator, "module", generator)

    def pretrain_step(generator, opt_g, x, y, config, **kw):
        local_g = copy.deepcopy(plain(generator))
        pixel_loss(local_g(x), y, config.pixel_loss).backward()
        terms = real_pretrain_step(generator, opt_g, x, y, config, **kw)
        records.append({"phase": "pretrain", "G_local": _grads(local_g), "G": _grads(plain(generator))})
        return terms

    def gan_step(generator, discriminator, opt_g, opt_d, x, y, config, **kw):
        local_g, local_d = copy.deepcopy(plain(generator)), copy.deepcopy(discriminator).requires_grad_(True)
        discriminator_loss_terms(local_d, y, local_g(x), gan_loss=config.gan_loss,
                                 weights=loss_weights(config))[0].backward()
        terms = real_gan_step(generator, discriminator, opt_g, opt_d, x, y, config, **kw)
        # G's own gradient against the D it stepped against (the updated one, frozen)
        updated_d = copy.deepcopy(discriminator)
        local_g.zero_grad(set_to_none=True)
        generator_loss(local_g(x), y, weights=loss_weights(config), discriminator=updated_d,
                       content=kw["content"], gan_loss=config.gan_loss)[0].backward()
        records.append({"phase": "gan", "G_local": _grads(local_g), "G": _grads(plain(generator)),
                        "D_local": _grads(local_d), "D": _grads(discriminator)})
        return terms

    train.pretrain_step, train.gan_step = pretrain_step, gan_step
    train.fit(TrainConfig(hr=hr, out=str(Path(out) / "run"), scale=2, blocks=1, channels=8, batch_norm=False,
                          batch_size=2, patch_size=16, pretrain_steps=1, gan_steps=1, content_loss="mse",
                          grad_clip=0.0, device="cpu", amp="off", progress=False, seed=3))
    torch.save(records, Path(out) / f"grads_rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    _record_gradients_under_torchrun(*sys.argv[1:3])
