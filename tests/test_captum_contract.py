"""Captum's own generic invariants, for Grad-ECLIP and every baseline (image and text side).

Ported from Captum's test suite: hook removal (``test_hook_removal.py``: a normal call, an
exception inside the forward, a wrong target, an invalid module), the target forms of
``test_targets.py`` (a batch explained at once equals each example explained alone with
``target[i]`` and ``target[i:i+1]``), ``NoiseTunnel`` configurations (``stdevs=0.0`` gives the
plain attribution, vargrad zero), batch independence, float64, and the robustness metrics.
"""

from __future__ import annotations

import re
import unittest

import pytest
import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution, NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip import methods as registry
from captum_gradeclip.baselines import GAME, M2IB, AttentionRollout, CLIPSurgery, TokenGradCAM
from captum_gradeclip.metrics.robustness import word_swap
from tests.adapters.conftest import LOADERS, make_vit_classifier
from tests.conftest import assert_unchanged, count_hooks, make_clip, model_snapshot, random_texts

try:  # Captum ships its test helpers from 0.9 on; the oldest supported Captum (0.8) does not
    from captum.testing.helpers.basic import assertTensorAlmostEqual
except ImportError:  # pragma: no cover - exercised by the Captum 0.8 CI pass
    assertTensorAlmostEqual = None

#: Every registered variant (``methods.available()``, paper mode included), with its small test arguments.
METHODS = [(m.cls, {**m.kwargs, **m.quick}) for m in registry.available()]
GRADIENT_METHODS = (cg.GradECLIP, GAME, TokenGradCAM, M2IB)

CASES = [
    pytest.param(m.cls, {**m.kwargs, **m.quick}, modality, id=f"{registry.key(m.name)}-{modality}")
    for m in registry.available()
    for modality in m.modalities
]
IMAGE_CASES = [c for c in CASES if c.values[2] == "image"]

N = 3  # examples per batch
M = 3  # output columns of both wrappers

_CASE = unittest.TestCase()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to ``rel`` of the expected values' largest magnitude (Captum's helper where it ships)."""
    delta = rel * max(float(expected.abs().max()), 1e-6)
    if assertTensorAlmostEqual is not None:
        assertTensorAlmostEqual(_CASE, actual, expected, delta=delta, mode="max")
    else:
        torch.testing.assert_close(actual, expected, atol=delta, rtol=0)


class Setup:
    """A tiny CLIP, one wrapper per side and a batch of inputs for it (the same numbers in any dtype)."""

    def __init__(self, modality: str, dtype: torch.dtype = torch.float32) -> None:
        self.model = make_clip(0).to(dtype)
        g = torch.Generator().manual_seed(1)
        references = torch.randn(M, 16, generator=g).to(dtype)
        if modality == "image":
            self.sim = cg.ImageTextSimilarity(self.model, text_embeds=references)
            self.x = torch.randn(N, 3, 32, 32, generator=g).to(dtype)
            self.extra: tuple = ()
        else:
            self.sim = cg.TextImageSimilarity(self.model, image_embeds=references)
            self.x, mask = random_texts(N, 7, seed=2)
            self.extra = (mask,)
        self.modality = modality

    def kwargs(self, rows: slice | None = None) -> dict:
        extra = self.extra if rows is None else tuple(a[rows] for a in self.extra)
        return {"additional_forward_args": extra} if extra else {}

    def inputs(self, rows: slice | None = None) -> torch.Tensor:
        return self.x if rows is None else self.x[rows]

    def forward_module(self) -> nn.Module:
        """A module the wrapper's forward passes through, to make fail."""
        tower = self.model.vision_model if self.modality == "image" else self.model.text_model
        return tower.encoder.layers[0].mlp

    def explained_block_name(self) -> str:
        tower = "vision_model" if self.modality == "image" else "text_model"
        return f"{tower}.encoder.layers.{len(self.sim.explained_blocks()) - 1}.self_attn"


_SETUPS: dict[tuple[str, torch.dtype], Setup] = {}


def setup_for(modality: str, dtype: torch.dtype = torch.float32) -> Setup:
    if (modality, dtype) not in _SETUPS:
        _SETUPS[modality, dtype] = Setup(modality, dtype)
    return _SETUPS[modality, dtype]


# -- Captum's class contract -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "modality"), IMAGE_CASES)
def test_is_a_captum_attribution_with_a_logged_attribute(method, kwargs, modality):
    explainer = method(setup_for(modality).sim, **kwargs)
    assert isinstance(explainer, Attribution)
    assert isinstance(explainer, GradientAttribution) == (method in GRADIENT_METHODS)
    assert isinstance(explainer, LayerAttribution) == (method is cg.GradECLIP)
    assert callable(explainer.attribute.__wrapped__)  # what NoiseTunnel calls (captum.log.log_usage)
    assert isinstance(explainer.get_name(), str) and explainer.get_name()


# -- hook removal (Captum's test_hook_removal.py) ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["normal", "noise_tunnel", "forward_error", "wrong_target"])
@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_hook_removal(method, kwargs, modality, mode, monkeypatch):
    s = setup_for(modality)
    before = model_snapshot(s.model)
    explainer = method(s.sim, **kwargs)
    if mode == "normal":
        explainer.attribute(s.inputs(), target=1, **s.kwargs())
    elif mode == "noise_tunnel":
        NoiseTunnel(explainer).attribute(s.inputs(), nt_samples=2, stdevs=0.0, target=1, **s.kwargs())
    elif mode == "forward_error":

        def boom(*_args, **_kwargs):
            raise AssertionError("Raising error on execution")

        monkeypatch.setattr(s.forward_module(), "forward", boom)
        with pytest.raises(AssertionError, match="Raising error on execution"):
            explainer.attribute(s.inputs(), target=1, **s.kwargs())
        monkeypatch.undo()
    else:
        for target in ((9999,) * 20, 9999, [0] * (N + 1)):
            with pytest.raises(ValueError, match="target"):
                explainer.attribute(s.inputs(), target=target, **s.kwargs())
    assert_unchanged(s.model, before)


class ErrorModule(nn.Module):
    """Captum's invalid module: it raises when it runs."""

    def forward(self, *_args, **_kwargs):
        raise AssertionError("Raising error on execution")


@pytest.mark.parametrize(("method", "kwargs", "modality"), [c for c in CASES if c.values[0].reads_explained_block])
def test_invalid_module_in_place_of_the_explained_block(method, kwargs, modality):
    """A method that reads the explained block (its declaration) checks it when built."""
    s = Setup(modality)  # its own model: the block is replaced
    name = s.explained_block_name()
    layer_name, attr = name.rsplit(".", 1)
    setattr(s.model.get_submodule(layer_name), attr, ErrorModule())
    with pytest.raises(TypeError, match=rf"`{name}` \(ErrorModule\)"):
        method(s.sim, **kwargs)
    assert count_hooks(s.model) == 0


@pytest.mark.parametrize(("method", "kwargs", "modality"), [c for c in CASES if not c.values[0].reads_explained_block])
def test_a_method_that_declares_it_does_not_read_the_block_only_runs_it(method, kwargs, modality):
    """The declaration is true: such a method builds without looking at the block, and the broken block shows
    when the model runs (the error module's own error), leaving no hook behind."""
    s = Setup(modality)
    name = s.explained_block_name()
    layer_name, attr = name.rsplit(".", 1)
    setattr(s.model.get_submodule(layer_name), attr, ErrorModule())
    s.model.eval()
    explainer = method(s.sim, **kwargs)
    with pytest.raises(AssertionError, match="Raising error on execution"):
        explainer.attribute(s.inputs(), target=0, **s.kwargs())
    assert count_hooks(s.model) == 0


# -- target forms (Captum's test_targets.py) ------------------------------------------------------------------

COLUMNS = [0, 2, 1]
PER_EXAMPLE = {
    "list of ints": COLUMNS,
    "list of tuples": [(c,) for c in COLUMNS],
    "tensor": torch.tensor(COLUMNS),
}
BROADCAST = {"int": 2, "tuple": (2,), "0-d tensor": torch.tensor(2), "1-element tensor": torch.tensor([2])}


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_targets_batch_equals_each_example_alone(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    alone = [
        explainer.attribute(s.inputs(slice(i, i + 1)), target=c, **s.kwargs(slice(i, i + 1)))
        for i, c in enumerate(COLUMNS)
    ]
    for form, target in PER_EXAMPLE.items():
        batch = explainer.attribute(s.inputs(), target=target, **s.kwargs())
        assert batch.shape[0] == N, form
        for i in range(N):
            rows = slice(i, i + 1)
            assert_close(batch[rows], alone[i])
            assert_close(explainer.attribute(s.inputs(rows), target=target[i], **s.kwargs(rows)), alone[i])
            assert_close(explainer.attribute(s.inputs(rows), target=target[i : i + 1], **s.kwargs(rows)), alone[i])
    same = explainer.attribute(s.inputs(), target=[2] * N, **s.kwargs())
    for target in BROADCAST.values():
        assert_close(explainer.attribute(s.inputs(), target=target, **s.kwargs()), same)
    every = explainer.attribute(s.inputs(), target=None, **s.kwargs())  # our extension: every column
    assert every.shape[1] == M
    assert_close(every[:, 2], same[:, 0] if modality == "image" else same)


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES[:2] + [c for c in CASES if c.values[0] is GAME])
@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ((0, 1, 2), ValueError, "exactly one index"),  # as long as the batch: still a column index, not a list
        ((), ValueError, "exactly one index"),
        ([0, 1], ValueError, "one entry per example"),
        ([(0, 1), (1,), (2,)], ValueError, "exactly one index"),
        (torch.tensor([[0], [1], [2]]), ValueError, "1-D"),
        (torch.tensor([0, 1]), ValueError, "one per example"),
        (torch.tensor(1.0), TypeError, "dtype"),
        (1.0, TypeError, "target"),
        (True, TypeError, "target"),
        ({0, 1, 2}, TypeError, "target"),
        ([0, 1, 3], ValueError, "output columns"),
        (3, ValueError, r"output columns \(0\.\.2, or -3\.\.-1 from the end\); got \[3\]"),
        (-4, ValueError, r"output columns \(0\.\.2, or -3\.\.-1 from the end\); got \[-4\]"),
        ([0, -4, 1], ValueError, r"got \[-4\]"),
        (torch.tensor([0, 1, -5]), ValueError, r"got \[-5\]"),
    ],
)
def test_bad_targets_give_clear_errors(method, kwargs, modality, target, error, match):
    s = setup_for(modality)
    with pytest.raises(error, match=match):
        method(s.sim, **kwargs).attribute(s.inputs(), target=target, **s.kwargs())


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_negative_targets_index_from_the_end(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    last = explainer.attribute(s.inputs(), target=M - 1, **s.kwargs())
    for target in (-1, (-1,), torch.tensor(-1), [-1] * N, torch.full((N,), -1)):
        assert torch.equal(explainer.attribute(s.inputs(), target=target, **s.kwargs()), last), target
    mixed = explainer.attribute(s.inputs(), target=[-3, 2, -2], **s.kwargs())  # Python's meaning: 0, 2, 1
    assert torch.equal(mixed, explainer.attribute(s.inputs(), target=COLUMNS, **s.kwargs()))


# -- NoiseTunnel ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_noise_tunnel_with_zero_noise_is_the_plain_attribution(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    tunnel = NoiseTunnel(explainer)
    target = torch.tensor(COLUMNS)  # expanded per sample by NoiseTunnel
    plain = explainer.attribute(s.inputs(), target=target, **s.kwargs())
    scale = float(plain.abs().max())
    expected = {"smoothgrad": plain, "smoothgrad_sq": plain**2, "vargrad": torch.zeros_like(plain)}
    for nt_type, want in expected.items():
        got = tunnel.attribute(
            s.inputs(), nt_type=nt_type, nt_samples=3, nt_samples_batch_size=2, stdevs=0.0, target=target, **s.kwargs()
        )
        assert got.shape == plain.shape and got.dtype == plain.dtype
        torch.testing.assert_close(got, want, atol=1e-4 * max(scale, scale**2, 1e-6), rtol=0)
    every = tunnel.attribute(s.inputs(), nt_samples=2, stdevs=0.0, target=None, **s.kwargs())
    assert_close(every, explainer.attribute(s.inputs(), target=None, **s.kwargs()))
    (as_tuple,) = tunnel.attribute((s.inputs(),), nt_samples=2, stdevs=0.0, target=COLUMNS, **s.kwargs())
    assert_close(as_tuple, plain)


@pytest.mark.parametrize(("method", "kwargs", "modality"), IMAGE_CASES)
def test_noise_tunnel_with_noise_averages_noisy_attributions(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    torch.manual_seed(0)
    smooth = NoiseTunnel(explainer).attribute(s.x, nt_type="smoothgrad", nt_samples=4, stdevs=0.5, target=1)
    torch.manual_seed(0)  # the same noise: the mean of the four noisy attributions Captum drew
    noisy = s.x.repeat_interleave(4, dim=0) + torch.normal(0, torch.full((N * 4, *s.x.shape[1:]), 0.5))
    expected = explainer.attribute(noisy, target=1).reshape(N, 4, *smooth.shape[1:]).mean(1)
    assert_close(smooth, expected)
    assert torch.isfinite(smooth).all()


def test_noise_on_token_ids_is_refused():
    s = setup_for("text")
    tunnel = NoiseTunnel(cg.GradECLIP(s.sim))
    with pytest.raises(ValueError, match="Token ids cannot take noise"):
        tunnel.attribute(s.x, nt_samples=2, stdevs=0.1, target=0, **s.kwargs())


# -- batch independence and dtype -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_batch_independence_for_every_column(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    batch = explainer.attribute(s.inputs(), **s.kwargs())
    for i in range(N):
        rows = slice(i, i + 1)
        assert_close(batch[rows], explainer.attribute(s.inputs(rows), **s.kwargs(rows)))


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_float64(method, kwargs, modality):
    s64 = setup_for(modality, torch.float64)
    got = method(s64.sim, **kwargs).attribute(s64.inputs(), target=COLUMNS, **s64.kwargs())
    assert got.dtype == torch.float64 and torch.isfinite(got).all()
    s = setup_for(modality)
    expected = method(s.sim, **kwargs).attribute(s.inputs(), target=COLUMNS, **s.kwargs())
    # M2IB's Adam steps about `lr` for any gradient well above its eps, so a gradient that is zero but for
    # rounding (which differs between float32 and float64) can move a bottleneck weight by a whole step
    assert_close(got.float(), expected, rel=0.15 if method is M2IB else 1e-3)


# -- forward_func, device_ids, Captum's layer arguments ------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_forward_func_forms(method, kwargs, modality):
    s = setup_for(modality)
    expected = method(s.sim, **kwargs).attribute(s.inputs(), target=COLUMNS, **s.kwargs())
    for form in (s.sim.forward, nn.DataParallel(s.sim)):
        explainer = method(form, **kwargs)
        assert explainer.forward_func is form and explainer.similarity is s.sim
        assert_close(explainer.attribute(s.inputs(), target=COLUMNS, **s.kwargs()), expected)
    for wrong in (s.model, s.sim.similarity, lambda x: s.sim(x)):
        with pytest.raises(TypeError, match=r"its bound `forward`, or such a wrapper inside torch\.nn\.DataParallel"):
            method(wrong, **kwargs)


def test_device_ids_are_refused_unless_the_data_parallel_own():
    s = setup_for("image")
    with pytest.raises(ValueError, match="device_ids"):
        cg.GradECLIP(s.sim, device_ids=[0])
    parallel = nn.DataParallel(s.sim)
    explainer = cg.GradECLIP(parallel, device_ids=list(parallel.device_ids))
    assert_close(explainer.attribute(s.x, target=1), cg.GradECLIP(s.sim).attribute(s.x, target=1))
    with pytest.raises(ValueError, match="device_ids"):
        cg.GradECLIP(parallel, device_ids=[*parallel.device_ids, 7])


def test_device_ids_that_are_a_strict_subset_or_another_order_of_the_data_parallel_own_are_refused():
    """A DataParallel over devices 0 and 1 (its ids set by hand: this machine may have no GPU): only ``[0, 1]``
    itself is its own; ``[0]``, ``[1]``, ``[]`` and ``[1, 0]`` ask for a split the explanation never makes."""
    s = setup_for("image")
    parallel = nn.DataParallel(s.sim)
    parallel.device_ids = [0, 1]
    assert cg.GradECLIP(parallel, device_ids=[0, 1]).similarity is s.sim
    for ids in ([0], [1], [], [1, 0]):
        pattern = rf"`device_ids` {re.escape(repr(ids))} cannot be honoured: .* own \[0, 1\]"
        with pytest.raises(ValueError, match=pattern):
            cg.GradECLIP(parallel, device_ids=ids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU for a real DataParallel")
def test_real_data_parallel_runs_on_the_module_device():
    model = make_clip(0).cuda()
    sim = cg.ImageTextSimilarity(
        model, text_embeds=torch.randn(M, 16, generator=torch.Generator().manual_seed(1)).cuda()
    )
    x = torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    parallel = nn.DataParallel(sim)
    for method, kwargs in METHODS:
        got = method(parallel, **kwargs).attribute(x, target=COLUMNS)
        assert got.device == x.device
        assert_close(got, method(sim, **kwargs).attribute(x.cuda(), target=COLUMNS).cpu())


@pytest.mark.parametrize(("method", "kwargs", "modality"), IMAGE_CASES)
def test_attribute_to_layer_input(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    assert_close(explainer.attribute(s.x, target=1, attribute_to_layer_input=False), explainer.attribute(s.x, target=1))
    with pytest.raises(ValueError, match="defined inside the attention block"):
        explainer.attribute(s.x, target=1, attribute_to_layer_input=True)


def test_relu_attributions_is_captum_name_and_relu_a_deprecated_alias():
    s = setup_for("image")
    signed = cg.GradECLIP(s.sim, relu_attributions=False).attribute(s.x, target=COLUMNS)
    assert (signed < 0).any()
    assert_close(torch.relu(signed), cg.GradECLIP(s.sim).attribute(s.x, target=COLUMNS))
    with pytest.warns(FutureWarning, match="relu_attributions"):
        old = cg.GradECLIP(s.sim, relu=False)
    assert_close(old.attribute(s.x, target=COLUMNS), signed)
    with pytest.raises(ValueError, match="disagree"), pytest.warns(FutureWarning):
        cg.GradECLIP(s.sim, relu=False, relu_attributions=True)
    cam = TokenGradCAM(s.sim, relu_attributions=False).attribute(s.x, target=COLUMNS)
    assert (cam < 0).any()
    assert_close(torch.relu(cam), TokenGradCAM(s.sim).attribute(s.x, target=COLUMNS))


# -- Captum's robustness metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "modality"), CASES)
def test_sensitivity_max(method, kwargs, modality):
    s = setup_for(modality)
    explainer = method(s.sim, **kwargs)
    extra = {} if modality == "image" else {"perturb_func": word_swap(s.sim), **s.kwargs()}
    sens = sensitivity_max(explainer.attribute, s.inputs(), target=1, n_perturb_samples=2, **extra)
    assert sens.shape == (N,) and torch.isfinite(sens).all() and (sens >= 0).all()
    if method not in (AttentionRollout, CLIPSurgery) and modality == "image":
        assert (sens > 0).any()  # the default perturbation moves the maps


@pytest.mark.parametrize(("method", "kwargs", "modality"), IMAGE_CASES)
def test_infidelity(method, kwargs, modality):
    s = setup_for(modality)
    maps = method(s.sim, **kwargs).attribute(s.x, target=1)
    per_pixel = LayerAttribution.interpolate(maps, s.x.shape[-2:], "bilinear").expand_as(s.x)
    g = torch.Generator().manual_seed(0)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=g) * 0.05
        return noise, inputs - noise

    value = infidelity(s.sim, perturb, s.x, per_pixel, target=1, n_perturb_samples=3)
    assert value.shape == (N,) and torch.isfinite(value).all() and (value >= 0).all()


# -- every loader -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_noise_tunnel_and_targets_on_every_loader(loader):
    spec = LOADERS[loader]
    model = spec.load(0)
    sim = cg.ImageTextSimilarity(
        model, text_embeds=torch.randn(M, spec.embed, generator=torch.Generator().manual_seed(1))
    )
    x = torch.randn(2, 3, spec.side, spec.side, generator=torch.Generator().manual_seed(2))
    explainer = cg.GradECLIP(sim)
    plain = explainer.attribute(x, target=[2, 0])
    assert_close(explainer.attribute(x, target=torch.tensor([2, 0])), plain)
    assert_close(explainer.attribute(x, target=[(2,), (0,)]), plain)
    smooth = NoiseTunnel(explainer).attribute(x, nt_samples=2, stdevs=0.0, target=[2, 0])
    assert_close(smooth, plain)
    assert count_hooks(model) == 0
    # Captum's invalid module in place of this loader's explained block: refused at construction, by name
    name = next(n for n, m in model.named_modules() if m is sim.explained_blocks()[-1])
    model.set_submodule(name, ErrorModule())
    with pytest.raises((TypeError, ValueError), match=rf"`{re.escape(name)}` \(ErrorModule\)"):
        cg.GradECLIP(sim)
    assert count_hooks(model) == 0


def test_noise_tunnel_on_an_image_classifier():
    clf = cg.ImageClassification(make_vit_classifier(0))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    explainer = cg.GradECLIP(clf)
    plain = explainer.attribute(x, target=(3,))
    assert_close(NoiseTunnel(explainer).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=3), plain)
    assert_close(explainer.attribute(x[1:], target=torch.tensor([3])), plain[1:])
