"""ChartCNN + registry: shapes per block (METHOD 5 table), parameter counts, METHOD 9 shape tests."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.models import TABLE18, ChartCNN, ConvBlock, ModelSpec, count_parameters, macs_per_image
from pipeline.models.cnn import fuse_for_inference
from pipeline.models.registry import create_model, list_models, model_spec, register

# (C, H, W) after each block, copied from docs/method.md section 5; flatten size; parameters.
BASELINES = {
    "I5": ([(64, 16, 15), (128, 8, 15)], 15_360, 155_138),
    "I20": ([(64, 10, 60), (128, 5, 60), (256, 3, 60)], 46_080, 708_866),
    "I60": ([(64, 15, 180), (128, 8, 180), (256, 4, 180), (512, 2, 180)], 184_320, 2_952_962),
}
# METHOD 9 "Shape tests": flatten / params.
TABLE18_SHAPES = {
    "I20": (46_080, 708_866),
    "I20-dropout0.00": (46_080, 708_866),
    "I20-dropout0.25": (46_080, 708_866),
    "I20-dropout0.75": (46_080, 708_866),
    "I20-noxavier": (46_080, 708_866),
    "I20-relu": (46_080, 708_866),
    "I20-filters32": (23_040, 200_834),
    "I20-filters128": (92_160, 2_646_530),
    "I20-layers2": (38_400, 201_218),
    "I20-layers4": (61_440, 2_707_202),
    "I20-nobn": (46_080, 707_970),
    "I20-pool2x2": (6_144, 628_994),
    "I20-kernel3x3": (46_080, 462_722),
    "I20-kernel7x3": (46_080, 955_010),
    "I20-dil21-str11": (122_880, 862_466),
    "I20-dil11-str11": (122_880, 862_466),
    "I20-dil11-str31": (46_080, 708_866),
}


def _block_outputs(model: ChartCNN, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for b in model.blocks]
    model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_registry_names_and_table18_order():
    names = list_models()
    assert names[:3] == ["I5", "I20", "I60"]
    assert set(TABLE18_SHAPES) | {"I5", "I60"} == set(names)
    assert TABLE18[0] == ("Baseline", "", "I20")
    assert len(TABLE18) == 17
    assert [r.model for r in TABLE18][1:4] == ["I20-filters32", "I20-filters128", "I20-layers2"]
    assert TABLE18[-1] == ("Dilation/Stride ((2,1)/(3,1))", "(1,1)/(1,1)", "I20-dil11-str11")
    assert all(r.model in names for r in TABLE18)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model 'I21'"):
        create_model("I21")
    with pytest.raises(ValueError, match="already registered"):
        register("I20")(lambda: model_spec("I20"))
    with pytest.raises(ValueError, match="activation"):
        ModelSpec(image_hw=(64, 60), n_blocks=3, activation="gelu")


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_per_block_shapes_and_params(name):
    shapes, flat, params = BASELINES[name]
    torch.manual_seed(0)
    m = create_model(name).eval()
    x = torch.randn(3, 1, *m.spec.image_hw)
    assert _block_outputs(m, x) == shapes  # measured, not computed from the spec formula
    assert m.spec.block_shapes() == shapes
    assert m.spec.fc_in == flat == math.prod(shapes[-1])
    assert m.head[2].in_features == flat
    assert count_parameters(m) == params


@pytest.mark.parametrize("name", list(TABLE18_SHAPES))
def test_table18_shape_pairs(name):
    flat, params = TABLE18_SHAPES[name]
    m = create_model(name).eval()
    shapes = _block_outputs(m, torch.zeros(1, 1, 64, 60))
    assert math.prod(shapes[-1]) == flat
    assert shapes == m.spec.block_shapes()
    assert count_parameters(m) == params


def test_i20_first_layer_only_has_stride_and_dilation():
    m = create_model("I20")
    convs = [b.conv for b in m.blocks]
    assert [c.stride for c in convs] == [(3, 1), (1, 1), (1, 1)]
    assert [c.dilation for c in convs] == [(2, 1), (1, 1), (1, 1)]
    assert all(c.padding == (2, 1) for c in convs)
    assert model_spec("I60").first_dilation == (3, 1) and model_spec("I5").first_stride == (1, 1)
    # The public defect (stride/dilation/padding (12,1) on every layer) has the same parameter
    # count but different block heights (27 -> 13 -> 10 -> 5 -> 7 -> 3): shapes catch it.
    defect = create_model("I20")
    for b in defect.blocks:
        b.conv.stride, b.conv.dilation, b.conv.padding = (3, 1), (2, 1), (12, 1)
    assert count_parameters(defect) == 708_866
    defect_shapes = [tuple(f.shape[1:]) for f in defect.features(torch.zeros(1, 1, 64, 60))]
    assert [s[1] for s in defect_shapes] == [14, 5, 4]  # conv 27, 10, 7 then ceil-mode pooling
    assert defect_shapes != BASELINES["I20"][0]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(1)
    m = create_model(name).train()
    x = torch.randn(4, 1, *m.spec.image_hw)
    logits = m(x)
    assert logits.shape == (4, 2) and logits.dtype == torch.float32
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_block_structure_and_variants():
    m = create_model("I20")
    assert isinstance(m.blocks, nn.ModuleList) and all(isinstance(b, ConvBlock) for b in m.blocks)
    b = m.blocks[0]
    assert isinstance(b.bn, nn.BatchNorm2d) and isinstance(b.act, nn.LeakyReLU)
    assert b.act.negative_slope == 0.01
    assert b.pool.kernel_size == (2, 1) and b.pool.ceil_mode
    assert isinstance(m.head[0], nn.Flatten) and m.head[1].p == 0.5
    assert m.head[2].out_features == 2
    nobn = create_model("I20-nobn")
    assert all(isinstance(b.bn, nn.Identity) for b in nobn.blocks)
    assert all(isinstance(b.act, nn.ReLU) for b in create_model("I20-relu").blocks)
    assert create_model("I20-pool2x2").blocks[0].pool.kernel_size == (2, 2)
    assert create_model("I20-dropout0.75").head[1].p == 0.75
    assert create_model("I20-kernel7x3").blocks[1].conv.padding == (3, 1)


def test_no_softmax_in_model():
    torch.manual_seed(0)
    m = create_model("I5").eval()
    out = m(torch.randn(8, 1, 32, 15) * 3)
    assert not torch.allclose(out.sum(1), torch.ones(8))  # logits, not probabilities
    assert (out < 0).any()


def test_xavier_init_versus_default():
    torch.manual_seed(0)
    m = create_model("I20")
    lin = m.head[2]
    assert torch.all(lin.bias == 0.01)
    # Xavier-uniform bound sqrt(6/(fan_in+fan_out)); the weights fill most of it.
    bound = math.sqrt(6 / (46_080 + 2))
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.99 * bound
    c = m.blocks[1].conv  # fan_in 64*15, fan_out 128*15
    cb = math.sqrt(6 / (64 * 15 + 128 * 15))
    assert c.weight.abs().max() <= cb and c.weight.abs().max() > 0.99 * cb
    torch.manual_seed(0)
    d = create_model("I20-noxavier")
    assert not torch.all(d.head[2].bias == 0.01)
    # torch's default (kaiming_uniform a=sqrt(5)) bound is 1/sqrt(fan_in) for linear weights.
    assert d.head[2].weight.abs().max() <= 1 / math.sqrt(46_080)


def test_features_match_forward():
    torch.manual_seed(0)
    m = create_model("I20").eval()
    x = torch.randn(2, 1, 64, 60)
    feats = m.features(x)
    assert [tuple(f.shape[1:]) for f in feats] == BASELINES["I20"][0]
    assert torch.allclose(m.head(feats[-1]), m(x))


def test_macs_hand_computed():
    # I5: conv1 64*32*15*1*15 = 460,800; conv2 128*16*15*64*15 = 29,491,200; fc 15,360*2.
    assert macs_per_image(model_spec("I5")) == 460_800 + 29_491_200 + 30_720
    # I20: conv heights 20, 10, 5 (pre-pool); 64*20*60*15 + 128*10*60*64*15 + 256*5*60*128*15.
    assert macs_per_image(model_spec("I20")) == 1_152_000 + 73_728_000 + 147_456_000 + 92_160


@pytest.mark.parametrize("name", ["I5", "I20", "I60", "I20-pool2x2", "I20-nobn", "I20-relu", "I20-dil11-str11"])
def test_fast_paths_equal_reference_ops(name):
    """StemConv2d == nn.Conv2d, FastMaxPool2d (no grad) == nn.MaxPool2d, fused inference copy ==
    the eval model; with BatchNorm statistics that are not the identity."""
    torch.manual_seed(3)
    m = create_model(name)
    m.train()
    with torch.no_grad():  # give BN non-trivial running statistics
        for _ in range(3):
            m(torch.randn(16, 1, *m.spec.image_hw) * 2 + 0.5)
    m.eval()
    x = torch.randn(5, 1, *m.spec.image_hw)
    for cl in (False, True):
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        with torch.no_grad():
            ref = xx
            for b in m.blocks:
                z = b.act(b.bn(nn.Conv2d.forward(b.conv, ref)))
                p = b.pool
                ref = nn.functional.max_pool2d(z, p.kernel_size, p.stride, ceil_mode=True)
                assert torch.equal(b.pool(z), ref)  # fast no-grad pooling is exact
            ref = m.head(ref)
            assert torch.allclose(m(xx), ref, atol=1e-5)
            assert torch.allclose(fuse_for_inference(m)(xx), ref, atol=1e-4, rtol=1e-4)
    assert isinstance(m.blocks[0].bn, nn.BatchNorm2d) or name == "I20-nobn"  # original untouched


def test_fast_dropout_distribution():
    torch.manual_seed(0)
    d = create_model("I20-dropout0.25").head[1].train()
    assert isinstance(d, nn.Dropout)
    y = d(torch.ones(200, 1000))
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.005
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    d.eval()
    x = torch.randn(3, 4)
    assert torch.equal(d(x), x)
