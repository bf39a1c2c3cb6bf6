"""WebDAModel's loss terms, their signs, the gradient reversal and its DANN schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from webda.models.attention import WebAttention
from webda.models.discriminator import MultiLayerDiscriminator, pooled
from webda.models.method import IMAGE_PAIRS, WebDAModel
from webda.models.resnet import build_resnet
from webda_kernels.nn import dann_coeff

SIZES = {"image": 5, "frame": 3, "target": 4}  # unequal on purpose


def _model(pairs=IMAGE_PAIRS, attention=True, beta=0.5, steps=10):
    torch.manual_seed(0)
    net = build_resnet("resnet-narrow16", 4)
    att = dict(top_t=3, temperature=0.5) if attention else None
    return WebDAModel(net, ["image", "frame"], pairs, att, beta=beta, discriminator_hidden=8, grl_steps=steps)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    inputs = {b: torch.randn(n, 3, 32, 32, generator=g) for b, n in SIZES.items()}
    labels = {b: torch.randint(4, (SIZES[b],), generator=g) for b in ("image", "frame")}
    return inputs, labels


def test_model_loss_is_weighted_ce_plus_beta_domain():
    model = _model()
    inputs, labels = _batch()
    out = model(inputs, labels)
    domain = [out[f"domain/{a}_vs_{b}"] for a, b in IMAGE_PAIRS]
    assert len(domain) == 3
    torch.testing.assert_close(out["loss"], out["ce/image"] + out["ce/frame"] + 0.5 * sum(domain))
    # the CE term is sum_i alpha_i * CE_i, with alpha from the attention against the target batch
    emb = model.net.forward_features(torch.cat([inputs[b] for b in model.branches]))[0]
    emb_image, emb_target = emb[:5], emb[8:]
    alpha = model.attention["image"](emb_image, emb_target)
    ce = F.cross_entropy(model.net.fc(emb_image), labels["image"], reduction="none")
    torch.testing.assert_close(out["ce/image"], (alpha * ce).sum())
    torch.testing.assert_close(out["alpha/image"], alpha.detach())
    assert out["alpha/image"].shape == (5,)


def test_model_loss_without_attention_is_mean_ce():
    model = _model(pairs=(), attention=False)
    assert model.branches == ("image", "frame")  # no target branch needed
    inputs, labels = _batch()
    del inputs["target"]
    out = model(inputs, labels)
    logits = model.net(torch.cat([inputs["image"], inputs["frame"]]))
    torch.testing.assert_close(out["ce/frame"], F.cross_entropy(logits[5:], labels["frame"]))
    torch.testing.assert_close(out["loss"], out["ce/image"] + out["ce/frame"])


def test_model_domain_loss_is_bce_with_logits_of_each_side():
    model = _model(pairs=[("target", "image")], attention=False)
    inputs, labels = _batch()
    out = model(inputs, labels)
    taps = [pooled(t) for t in model.net.forward_features(torch.cat([inputs[b] for b in model.branches]))[1]]
    disc = model.discriminators["target_vs_image"]
    one = disc([t[8:] for t in taps])  # target, labeled 1
    zero = disc([t[:5] for t in taps])  # web images, labeled 0
    expected = -(F.logsigmoid(one).mean() + F.logsigmoid(-zero).mean())  # -(E log D(t) + E log(1 - D(i)))
    torch.testing.assert_close(out["domain/target_vs_image"], expected)


def _grads(loss, params):
    return [g if g is not None else torch.zeros_like(p) for g, p in
            zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)]


@pytest.mark.parametrize("iters", [1, 4, 10])
def test_model_domain_gradient_is_reversed_and_scaled_for_the_encoder_only(iters):
    model = _model(pairs=[("target", "image")], attention=False, steps=10)
    for _ in range(iters):
        model.grl.step()
    coeff = dann_coeff(iters / 10)
    assert model.grl.coeff == pytest.approx(coeff)
    inputs, labels = _batch()
    out = model(inputs, labels)
    encoder = [p for p in model.net.layer3.parameters()]
    disc = list(model.discriminators.parameters())
    domain = out["domain/target_vs_image"]
    reversed_enc, disc_grad = _grads(domain, encoder), _grads(domain, disc)

    # the same loss with the reversal layer replaced by the identity
    model.grl.forward = lambda x: x
    plain = model(inputs, labels)["domain/target_vs_image"]
    plain_enc, plain_disc = _grads(plain, encoder), _grads(plain, disc)
    for r, p in zip(reversed_enc, plain_enc):
        torch.testing.assert_close(r, -coeff * p)  # encoder: ascends the domain loss, scaled by the schedule
    for r, p in zip(disc_grad, plain_disc):
        torch.testing.assert_close(r, p)  # discriminator: descends it
    assert any(g.abs().sum() > 0 for g in plain_enc)


def test_model_dann_schedule_starts_at_zero_and_rises():
    model = _model(steps=100)
    assert model.grl.coeff == 0.0
    values = []
    for _ in range(100):
        model.grl.step()
        values.append(model.grl.coeff)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    restored = _model(steps=100)
    restored.load_state_dict(model.state_dict())  # the schedule's progress is saved and resumed
    assert restored.grl.coeff == values[-1]


def test_model_ablation_switches_build_what_they_claim():
    net = build_resnet("resnet-narrow16", 4)
    no_da = WebDAModel(net, ["image", "frame"], (), dict(top_t=3))
    assert len(no_da.discriminators) == 0 and no_da.grl is None
    assert not any("discriminators" in k for k in no_da.state_dict())
    no_att = WebDAModel(net, ["image"], [("target", "image")], None)
    assert no_att.attention is None and no_att.branches == ("image", "target")
    full = WebDAModel(net, ["image", "frame"], IMAGE_PAIRS, dict(top_t=3))
    assert sorted(full.discriminators) == ["image_vs_frame", "target_vs_frame", "target_vs_image"]
    assert sorted(full.attention) == ["frame", "image"]


def test_model_discriminator_is_multi_layer_concatenation():
    disc = MultiLayerDiscriminator([2, 3], hidden=4)
    taps = [torch.randn(6, 2), torch.randn(6, 3)]
    d1 = disc.layers[0](torch.relu(taps[0]))
    d2 = disc.layers[1](torch.relu(torch.cat([d1, taps[1]], 1)))
    torch.testing.assert_close(disc(taps), disc.head(torch.relu(d2)).squeeze(1))
    with pytest.raises(ValueError, match="taps"):
        disc(taps[:1])


def test_model_attention_is_softmax_of_mean_top_t_cosine():
    torch.manual_seed(0)
    att = WebAttention(dim=6, top_t=3, temperature=0.25)
    src, tgt = torch.randn(5, 6), torch.randn(7, 6)
    cos = F.normalize(src, dim=1) @ F.normalize(tgt, dim=1).T  # W starts at the identity
    expected = torch.softmax(cos.topk(3, dim=1).values.mean(1) / 0.25, dim=0)
    torch.testing.assert_close(att(src, tgt), expected)


def test_model_attention_bank_queues_recent_targets():
    torch.manual_seed(0)
    att = WebAttention(dim=4, top_t=2, temperature=1.0, bank_size=5)
    batches = [torch.randn(3, 4) for _ in range(3)]
    src = torch.randn(2, 4)
    att(src, batches[0])
    assert int(att.bank_filled) == 3
    att(src, batches[1])
    assert int(att.bank_filled) == 5 and int(att.bank_next) == 1  # wrapped around
    # against batch 2 the keys are batch 2 plus the queue: rows 1-2 of batch 0 were overwritten partly
    queue = torch.cat([F.normalize(batches[1][2:], dim=1), F.normalize(batches[0][1:], dim=1),
                       F.normalize(batches[1][:2], dim=1)])
    keys = torch.cat([F.normalize(batches[2], dim=1), att.bank.clone()])
    assert torch.allclose(torch.sort(att.bank, 0).values, torch.sort(queue, 0).values)
    cos = F.normalize(src, dim=1) @ keys.T
    expected = torch.softmax(cos.topk(2, dim=1).values.mean(1), dim=0)
    torch.testing.assert_close(att(src, batches[2]), expected)
    att.eval()
    before = att.bank.clone()
    att(src, batches[0])
    assert torch.equal(att.bank, before)  # evaluation never enqueues
    assert "bank" in att.state_dict()


def test_attention_class_balance_keeps_each_label_share_and_the_ratios_within_it():
    torch.manual_seed(0)
    labels = torch.tensor([2, 0, 2, 2, 0, 3, 2])  # label 1 absent, label 3 alone
    src, tgt = torch.randn(7, 6, requires_grad=True), torch.randn(5, 6)
    plain = WebAttention(dim=6, top_t=3, temperature=0.25)(src, tgt)
    att = WebAttention(dim=6, top_t=3, temperature=0.25, class_balance=True)
    alpha = att(src, tgt, labels)
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0))
    for c, n in ((0, 2), (2, 4), (3, 1)):
        members = labels == c
        torch.testing.assert_close(alpha[members].sum(), torch.tensor(n / 7))
        torch.testing.assert_close(alpha[members] / alpha[members].sum(), plain[members] / plain[members].sum())
    alpha[0].backward()
    assert src.grad.abs().sum() > 0 and att.topt.parametrizations.weight.original.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels"):
        att(src, tgt)
