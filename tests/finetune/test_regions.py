"""Signed phrase maps, map-weighted pooling, the losses and region zero-shot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.adapters.dense import value_path_tokens
from captum_gradeclip.finetune import (
    anchor_distance,
    clip_loss,
    mask_weights,
    phrase_maps,
    pooling_weights,
    region_embeddings,
    region_phrase_loss,
    region_zero_shot,
    relation_distillation,
)
from captum_gradeclip.zoo import shapes
from tests.conftest import make_clip
from tests.finetune.conftest import object_regions


def test_phrase_maps_are_the_signed_grad_eclip_maps_of_each_pair():
    model = make_clip(1)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    maps = phrase_maps(sim, x, torch.tensor([[2, 0], [1, -1]]))
    assert maps.shape == (2, 2, 4, 4) and not maps.requires_grad
    signed = cg.GradECLIP(sim, relu_attributions=False)
    assert torch.allclose(maps[0, 0], signed.attribute(x[:1], target=2)[0, 0], atol=1e-5)
    assert torch.allclose(maps[1, 0], signed.attribute(x[1:], target=1)[0, 0], atol=1e-5)
    assert (maps[1, 1] == 0).all(), "an empty slot"
    assert maps.min() < 0, "no ReLU"
    with pytest.raises(ValueError, match="`targets` must be"):
        phrase_maps(sim, x, torch.tensor([0, 1]))


def test_phrase_maps_from_summed_or_lower_blocks_are_grad_eclips_of_those_blocks():
    model = make_clip(vision_layers=3)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    targets = torch.tensor([[2, 0], [1, -1]])
    blocks = sim.explained_blocks()
    summed = cg.GradECLIP(sim, relu_attributions=False, layers=2).attribute(x, target=[2, 1])
    lower = cg.GradECLIP(sim, blocks[1], relu_attributions=False).attribute(x, target=[2, 1])
    last = phrase_maps(sim, x, targets)
    two, below = phrase_maps(sim, x, targets, layers=2), phrase_maps(sim, x, targets, block=-2)
    assert torch.allclose(two[:, 0], summed[:, 0], atol=1e-5) and torch.allclose(below[:, 0], lower[:, 0], atol=1e-5)
    assert not torch.allclose(two, last, atol=1e-4) and not torch.allclose(below, last, atol=1e-4)
    assert torch.allclose(phrase_maps(sim, x, targets, block=1), below), "block 1 of 3 is block -2"
    assert (two[1, 1] == 0).all() and (below[1, 1] == 0).all(), "empty slots stay empty"
    for bad in (3, -4, 1.0, True):
        with pytest.raises(ValueError, match="`block` must be an int in \\[-3, 2\\]"):
            phrase_maps(sim, x, targets, block=bad)
    with pytest.raises(ValueError, match="`layers` must be an int in \\[1, 2\\]"):
        phrase_maps(sim, x, targets, layers=3, block=-2)


def test_pooling_weights_minmax_and_sum_to_one():
    maps = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    w = pooling_weights(maps)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2))
    assert torch.allclose(w[0, 0], torch.tensor([0.0, 0.25, 0.5, 1.0]) / 1.75)
    assert torch.allclose(w[0, 1], torch.full((4,), 0.25)), "a constant map pools uniformly"


def test_region_embeddings_pool_patches_and_skip_cls():
    dense = torch.randn(2, 5, 3)
    weights = torch.zeros(2, 1, 2, 2)
    weights[0, 0, 1, 0] = 1.0
    weights[1, 0] = 0.25
    regions = region_embeddings(dense, weights)
    assert torch.allclose(regions[0, 0], dense[0, 3])
    assert torch.allclose(regions[1, 0], dense[1, 1:].mean(0))
    with pytest.raises(ValueError, match="cover 4 patches"):
        region_embeddings(torch.randn(2, 7, 3), weights)


def test_region_phrase_loss_prefers_matched_pairs_and_honours_weights():
    phrases = F.normalize(torch.randn(3, 8), dim=-1)
    matched = region_phrase_loss(phrases + 0.01, phrases, torch.tensor([0, 1, 2]))
    wrong = region_phrase_loss(phrases, phrases, torch.tensor([1, 2, 0]))
    assert matched < 0.1 < 5 < wrong
    regions = torch.randn(3, 8)
    targets = torch.tensor([0, 1, 2])
    only_first = region_phrase_loss(regions, phrases, targets, torch.tensor([2.0, 0.0, 0.0]))
    assert torch.allclose(only_first, region_phrase_loss(regions[:1], phrases, targets[:1]))
    with pytest.raises(ValueError, match="non-negative"):
        region_phrase_loss(regions, phrases, targets, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="`regions` must be"):
        region_phrase_loss(regions[None], phrases, targets)


def test_clip_loss_is_low_for_matched_and_high_for_shuffled_pairs():
    e = torch.randn(4, 8)
    assert clip_loss(e, e, 50.0) < 0.05 < 1.0 < clip_loss(e, e.roll(1, 0), 50.0)


def test_clip_loss_extra_negatives_count_on_the_image_to_text_side_only():
    images, texts, extra = torch.randn(3, 8), torch.randn(3, 8), torch.randn(2, 8)
    logits = 10.0 * F.normalize(images, dim=-1) @ F.normalize(torch.cat([texts, extra]), dim=-1).T
    labels = torch.arange(3)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :3].T, labels)) / 2
    assert torch.allclose(clip_loss(images, torch.cat([texts, extra]), 10.0), expected, atol=1e-6)
    assert clip_loss(images, torch.cat([texts, images]), 10.0) > clip_loss(images, texts, 10.0), "a hard negative"
    with pytest.raises(ValueError, match="`text_embeds`"):
        clip_loss(images, texts[:2], 10.0)


def test_anchor_distance_is_zero_at_the_frozen_embedding_and_its_gradient_turns_back_toward_it():
    frozen = torch.randn(5, 8)
    assert float(anchor_distance(frozen.clone(), frozen)) == pytest.approx(0.0, abs=1e-6)
    assert float(anchor_distance(2.5 * frozen, frozen)) == pytest.approx(0.0, abs=1e-6), "length does not count"
    assert float(anchor_distance(-frozen, frozen)) == pytest.approx(2.0, abs=1e-6)
    drifted = (frozen + 0.5 * torch.randn(5, 8)).requires_grad_(True)
    loss = anchor_distance(drifted, frozen)
    expected = (1 - F.cosine_similarity(drifted, frozen)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    (grad,) = torch.autograd.grad(loss, drifted)
    stepped = drifted.detach() - 0.05 * grad
    closer = F.cosine_similarity(stepped, frozen) > F.cosine_similarity(drifted.detach(), frozen)
    assert closer.all(), "a gradient step turns every embedding toward its frozen one"
    at_start = frozen.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(anchor_distance(at_start, frozen), at_start)
    assert grad.abs().max() < 1e-6, "no pull at the start"
    with pytest.raises(ValueError, match="`embeds` and `frozen`"):
        anchor_distance(frozen, frozen[:3])


def test_relation_distillation_is_zero_for_the_same_retrieval_and_is_the_kl_otherwise():
    images, texts = torch.randn(3, 8), torch.randn(5, 8)
    rotation = torch.linalg.qr(torch.randn(8, 8))[0]  # a rotation keeps every cosine: the same retrieval
    same = relation_distillation(images @ rotation, texts @ rotation, images, texts, 10.0)
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    student_images, student_texts = torch.randn(3, 8), torch.randn(5, 8)
    loss = relation_distillation(student_images, student_texts, images, texts, 10.0)

    def softmaxes(i: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = 10.0 * F.normalize(i, dim=-1) @ F.normalize(t, dim=-1).T
        return logits.softmax(-1), logits[:, :3].T.softmax(-1)

    (p1, p2), (q1, q2) = softmaxes(images, texts), softmaxes(student_images, student_texts)
    kl = ((p1 * (p1 / q1).log()).sum(-1).mean() + (p2 * (p2 / q2).log()).sum(-1).mean()) / 2
    assert float(loss) == pytest.approx(float(kl), rel=1e-4) and float(loss) > 0
    student = student_images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(relation_distillation(student, texts, images, texts, 10.0), student)
    stepped = relation_distillation(student.detach() - 0.05 * grad, texts, images, texts, 10.0)
    assert stepped < relation_distillation(student_images, texts, images, texts, 10.0), "its gradient lowers it"
    with pytest.raises(ValueError, match="`text_embeds`"):
        relation_distillation(images, texts, images, texts[:4], 10.0)


def test_mask_weights_cover_fraction():
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :4, :4] = 1.0
    masks[0, 0, :2, 4:8] = 1.0
    w = mask_weights(masks, (2, 2))
    assert torch.allclose(w[0, 0], torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))


def test_value_path_tokens_carry_gradients():
    model = make_clip(2)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    dense = value_path_tokens(sim, torch.randn(1, 3, 32, 32))
    assert dense.shape == (1, 17, 16) and dense.requires_grad
    dense.sum().backward()
    assert model.vision_model.encoder.layers[-1].self_attn.v_proj.weight.grad.abs().sum() > 0


def test_region_zero_shot_on_shapes_clip_beats_chance_and_masks_matter(shapes_clip):
    model, processor = shapes_clip
    x, masks, labels = object_regions(processor, 7_000, 48, n_objects=1)
    sim = cg.ImageTextSimilarity(model, shapes.all_prompts(), processor=processor)
    on_object = region_zero_shot(sim, x, masks, labels).float().mean()
    off_object = region_zero_shot(sim, x, ~masks, labels).float().mean()
    # measured with the development copy: 0.23 on the object, 0.06 on the background (chance 1/24)
    assert on_object > off_object + 0.1
    with pytest.raises(ValueError, match="`masks` must be"):
        region_zero_shot(sim, x, masks[:, 0], labels)
