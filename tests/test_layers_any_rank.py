"""Linear layers on any input rank and the attention output projection are decomposable.

A Linear on (B, T, C) or (B, H, W, C) counts T (or H*W) positions per sample in its MACs; the
``out_proj`` of ``nn.MultiheadAttention`` (whose weight the attention reads without calling it) is
replaced through its parent by ``AttentionOutProj``, which reproduces the attention exactly at full rank.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from automtd.calibration import calibrate_plan
from automtd.methods import AttentionOutProj, FactorizedLinear, get_method
from automtd.metrics import count_macs
from automtd.plan import LayerChoice, apply_plan, decomposable_layers, make_plan, scan_layers


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class Tokens(nn.Module):
    """Patchify a 3x8x8 image into 16 tokens of 12 features, a Linear on (B, T, C), one on (B, H, W, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        t = x.reshape(n, 3, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, 16, 12)
        t = torch.relu(self.embed(t))  # (B, 16, 12) -> (B, 16, 16)
        grid = self.mix(t.reshape(n, 4, 4, 16))  # (B, 4, 4, 16)
        return self.head(grid.mean(dim=(1, 2)))


def _full_plan(model: nn.Module, input_size: tuple[int, int, int]):  # noqa: ANN202 - a Plan
    choices = {}
    for info in decomposable_layers(model, input_size):
        method = "svd_linear" if info.shape.kind == "linear" else "tucker2"
        choices[info.name] = LayerChoice(method, get_method(method).full_ranks(info.shape))
    return make_plan(model, choices, architecture="test", input_size=input_size)


def test_linear_on_sequences_and_channels_last_maps_is_decomposable_with_token_macs() -> None:
    model = Tokens().eval()
    infos = {i.name: i for i in scan_layers(model, (3, 8, 8))}
    assert all(i.skip_reason is None for i in infos.values())
    assert infos["embed"].in_hw == (16, 1)
    assert infos["mix"].in_hw == (16, 1)
    assert infos["head"].in_hw == (1, 1)
    assert infos["embed"].shape.dense_macs(infos["embed"].in_hw) == 16 * 12 * 16
    plan = _full_plan(model, (3, 8, 8))
    assert plan.totals.macs_before == count_macs(model, (3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        compressed = apply_plan(copy.deepcopy(model), plan)
        assert isinstance(compressed.embed, FactorizedLinear)
        assert _rel(compressed(x), ref) < 1e-5
    # the plan's analytic MACs are what torch counts on the compressed model
    assert plan.totals.macs_after == count_macs(compressed, (3, 8, 8))


def test_calibration_refits_a_linear_on_tokens() -> None:
    torch.manual_seed(0)
    model = Tokens().eval()
    choices = {"embed": LayerChoice("svd_linear", (4,)), "mix": LayerChoice("svd_linear", (4,))}
    plan = make_plan(model, choices, architecture="test", input_size=(3, 8, 8))
    compressed = apply_plan(copy.deepcopy(model), plan)
    images = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        before = _rel(compressed(images), model(images))
    calibrate_plan(model, compressed, plan, [images])
    with torch.no_grad():
        after = _rel(compressed(images), model(images))
    assert after < before


class Block(nn.Module):
    def __init__(self, batch_first: bool, kdim: int | None = None) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.kv = nn.Linear(16, kdim) if kdim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)  # (B, T, C)
        if not self.batch_first:
            t = t.transpose(0, 1)
        out, _ = self.attn(t, self.kv(t), self.kv(t), need_weights=False)
        return out.mean(dim=0 if not self.batch_first else 1)


def test_calibration_skips_an_attention_out_proj_with_a_reason() -> None:
    torch.manual_seed(0)
    model = Block(True).eval()
    choices = {"proj": LayerChoice("svd_channel", (4,)), "attn.out_proj": LayerChoice("svd_linear", (4,))}
    plan = make_plan(model, choices, architecture="test", input_size=(3, 16, 16))
    compressed = apply_plan(copy.deepcopy(model), plan)
    report = calibrate_plan(model, compressed, plan, [torch.randn(32, 3, 16, 16)], images=32)
    skipped = {lc.name: lc.skipped for lc in report.layers}
    assert skipped["proj"] is None  # the conv is refitted as usual
    assert "never calls this layer as a module" in str(skipped["attn.out_proj"])


@pytest.mark.parametrize(("batch_first", "kdim"), [(True, None), (False, None), (True, 8)])
def test_attention_out_proj_is_decomposed_through_its_parent(batch_first: bool, kdim: int | None) -> None:
    torch.manual_seed(0)
    model = Block(batch_first, kdim).eval()
    info = {i.name: i for i in scan_layers(model, (3, 16, 16))}["attn.out_proj"]
    assert info.skip_reason is None and info.in_hw == (16, 1)
    plan = _full_plan(model, (3, 16, 16))
    assert "attn.out_proj" in [lp.name for lp in plan.layers]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        compressed = apply_plan(copy.deepcopy(model), plan)
        assert isinstance(compressed.attn, AttentionOutProj)
        assert isinstance(compressed.attn.out_proj, FactorizedLinear)
        assert _rel(compressed(x), ref) < 1e-5
    assert plan.totals.macs_after == count_macs(compressed, (3, 16, 16))
    scripted = torch.jit.script(compressed)
    with torch.no_grad():
        assert _rel(scripted(x), ref) < 1e-5
    # a saved compressed model loads into the structure the plan builds on a fresh model
    fresh = apply_plan(Block(batch_first, kdim).eval(), plan, structure_only=True)
    fresh.load_state_dict(compressed.state_dict())
    with torch.no_grad():
        assert _rel(fresh(x), ref) < 1e-5


def test_attention_with_bias_k_keeps_out_proj_dense_with_a_reason() -> None:
    model = Block(True).eval()
    model.attn = nn.MultiheadAttention(16, 4, batch_first=True, add_bias_kv=True)
    info = {i.name: i for i in scan_layers(model, (3, 16, 16))}["attn.out_proj"]
    assert info.skip_reason is not None and "bias_k" in info.skip_reason


MASK_CASES = {
    "plain": {},
    "weights_per_head": {"need_weights": True, "average_attn_weights": False},
    "padding_mask": {"key_padding_mask": "pad", "need_weights": True},
    "bool_mask_2d": {"attn_mask": "bool2d", "need_weights": False},
    "float_mask_3d": {"attn_mask": "float3d", "need_weights": True},
    "causal": {"attn_mask": "causal", "is_causal": True, "need_weights": False},
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_attention_out_proj_equals_multihead_attention(batch_first: bool, case: str) -> None:
    torch.manual_seed(1)
    n, length, e, h = 3, 5, 8, 2
    mha = nn.MultiheadAttention(e, h, batch_first=batch_first).eval()
    nn.init.normal_(mha.in_proj_bias)
    wrapped = AttentionOutProj(mha, copy.deepcopy(mha.out_proj)).eval()
    q = torch.randn(n, length, e) if batch_first else torch.randn(length, n, e)
    kwargs: dict[str, object] = dict(MASK_CASES[case])
    masks = {
        "pad": torch.tensor([[False] * 4 + [True]] * n),
        "bool2d": torch.rand(length, length) > 0.7,
        "float3d": torch.randn(n * h, length, length),
        "causal": nn.Transformer.generate_square_subsequent_mask(length),
    }
    for key in ("key_padding_mask", "attn_mask"):
        if key in kwargs:
            kwargs[key] = masks[str(kwargs[key])]
    with torch.no_grad():
        ref_out, ref_w = mha(q, q, q, **kwargs)
        out, w = wrapped(q, q, q, **kwargs)
    assert _rel(out, ref_out) < 1e-5
    assert (w is None) == (ref_w is None)
    if w is not None and ref_w is not None:
        assert w.shape == ref_w.shape and _rel(w, ref_w) < 1e-5
    # unbatched input, as nn.MultiheadAttention allows
    if case == "plain":
        single = q[0] if batch_first else q[:, 0]
        with torch.no_grad():
            assert _rel(wrapped(single, single, single)[0], mha(single, single, single)[0]) < 1e-5


def test_tiny_vision_transformer_exports_to_torchscript_and_onnx(tmp_path) -> None:  # noqa: ANN001
    from torchvision.models.vision_transformer import VisionTransformer

    from automtd.deploy import export_onnx, export_torchscript

    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5).eval()
    size = (3, 16, 16)
    choices = {}
    for info in decomposable_layers(model, size):
        method = "svd_linear" if info.shape.kind == "linear" else "tucker2"
        half = tuple(max(1, r // 2) for r in get_method(method).full_ranks(info.shape))
        choices[info.name] = LayerChoice(method, half)
    assert "encoder.layers.encoder_layer_0.self_attention.out_proj" in choices
    compressed = apply_plan(model, make_plan(model, choices, architecture="tiny_vit", input_size=size))
    assert export_torchscript(compressed, tmp_path / "s.pt", size, mode="script") < 1e-5
    assert export_torchscript(compressed, tmp_path / "t.pt", size, mode="trace") < 1e-5
    assert export_onnx(compressed, tmp_path / "m.onnx", size).max_diff < 1e-4


def test_vit_b_16_every_linear_decomposes_and_reproduces_the_dense_output() -> None:
    from torchvision.models import vit_b_16

    from automtd.metrics import count_params

    torch.manual_seed(0)
    model = vit_b_16(image_size=32).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision initialises the head to zero
    size = (3, 32, 32)
    infos = scan_layers(model, size)
    assert [i.name for i in infos if i.skip_reason is not None] == []
    touched = sum(p.numel() for i in infos for p in i.module.parameters())
    assert touched > 0.7 * count_params(model)
    plan = _full_plan(model, size)
    assert len(plan.layers) == len(infos)
    x = torch.randn(2, *size)
    with torch.no_grad():
        ref = model(x)
        compressed = apply_plan(model, plan)
        assert _rel(compressed(x), ref) < 1e-5


def test_count_macs_counts_multihead_attention_in_eval_mode() -> None:
    """The inference fast path of nn.MultiheadAttention is one fused op FlopCounterMode does not count."""
    model = Block(True).eval()
    tokens, e = 16, 16
    projections = tokens * e * 3 * e + tokens * e * e  # in_proj (q, k, v) and out_proj
    conv = 16 * 16 * 3 * 4 * 4
    # (torch's counter has no formula for the CPU scaled_dot_product_attention kernel: the products are 0)
    assert count_macs(model, (3, 16, 16)) == conv + projections
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards
