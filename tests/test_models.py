"""Two-tower models: tokenizer, Mamba block layout, parameter counts, scoring, caching, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_env import ToyEnv

from recsim_ft.models import (
    FeatureTensors,
    FeatureTokenizer,
    MambaBlock,
    TwoTower,
    make_config,
    param_counts,
    params_report,
)
from recsim_ft.models.io import write_model_file
from recsim_ft.models.mamba import MambaEmbedder
from recsim_ft.models.scan import cuda_kernels_available
from recsim_ft.models.transformer import TransformerEmbedder
from recsim_ft.schema import Batch, Feature, Schema

EMBEDDERS = ["mamba", "transformer", "mlp"]


def toy_model(embedder="mamba", **overrides):
    return TwoTower.from_env(ToyEnv(), embedder=embedder, preset="quick", **overrides)


def toy_batches(n_users=6):
    env = ToyEnv()
    return env.sample_users(n_users, np.random.default_rng(0)), env.item_table()


# -- Mamba block -------------------------------------------------------------------------------
def test_mamba_block_has_mamba_simple_layout_and_init():
    block = MambaBlock(d_model=128, d_state=16, d_conv=16, expand=2)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "A_log": (256, 16),
        "D": (256,),
        "in_proj.weight": (512, 128),
        "conv1d.weight": (256, 1, 16),
        "conv1d.bias": (256,),
        "x_proj.weight": (40, 256),
        "dt_proj.weight": (256, 8),
        "dt_proj.bias": (256,),
        "out_proj.weight": (128, 256),
    }
    torch.testing.assert_close(block.A_log, torch.log(torch.arange(1.0, 17.0)).repeat(256, 1))
    assert torch.equal(block.D, torch.ones(256))
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert block.dt_proj.weight.abs().max() <= 8**-0.5


def test_mamba_block_forward_matches_reference_scan_path():
    """The block's fast path equals mamba_simple's formulas written with the plain reference
    scan."""
    from recsim_ft.models.scan import selective_scan_reference

    torch.manual_seed(0)
    block = MambaBlock(d_model=8, d_state=4, d_conv=4).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    xs, z = block.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    u = torch.nn.functional.silu(block.conv1d(xs)[..., :6])
    dt, B, C = block.x_proj(u.transpose(1, 2)).split([block.dt_rank, 4, 4], dim=-1)
    delta = (dt @ block.dt_proj.weight.T).transpose(1, 2)
    y = selective_scan_reference(
        u,
        delta,
        -torch.exp(block.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        block.D,
        z,
        block.dt_proj.bias,
        delta_softplus=True,
    )
    torch.testing.assert_close(block(x), block.out_proj(y.transpose(1, 2)))


def _autograd_node_names(t: torch.Tensor) -> set[str]:
    names, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize(
    "d_model,d_state,d_conv,L,batch",
    [(8, 4, 4, 6, 3), (24, 16, 16, 21, 5), (24, 16, 16, 1, 2), (16, 16, 4, 70, 2)],
)
def test_fused_cpu_block_matches_the_composed_float64_block(d_model, d_state, d_conv, L, batch):
    """float32 on CPU takes the fused block (conv, x_proj, dt_proj and scan under one backward,
    reading in_proj's and x_proj's outputs in place); float64 takes the composed ops. Values and
    every parameter gradient agree (d_inner 48: three 16-channel blocks; L 70: three chunks)."""
    torch.manual_seed(L)
    ref = MambaBlock(d_model=d_model, d_state=d_state, d_conv=d_conv).double()
    with torch.no_grad():  # away from the init's constants, so every parameter matters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused = MambaBlock(d_model=d_model, d_state=d_state, d_conv=d_conv)
    fused.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(batch, L, d_model, dtype=torch.float64)
    out_ref, out_fused = ref(x), fused(x.float())
    assert "_MambaInnerFnBackward" in _autograd_node_names(out_fused)
    assert "_MambaInnerFnBackward" not in _autograd_node_names(out_ref)
    torch.testing.assert_close(out_fused.double(), out_ref, rtol=1e-4, atol=1e-5)
    upstream = torch.randn_like(out_ref)
    (out_ref * upstream).sum().backward()
    (out_fused * upstream.float()).sum().backward()
    for (name, a), b in zip(ref.named_parameters(), fused.parameters(), strict=True):
        scale = a.grad.abs().max().item() + 1
        torch.testing.assert_close(
            b.grad.double(),
            a.grad,
            rtol=1e-4,
            atol=1e-4 * scale,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def _every_token_then_last(embedder: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The embedder's output computed the plain way: every layer over every token, then the
    last token read."""
    if isinstance(embedder, TransformerEmbedder):
        return embedder.encoder(tokens)[:, -1]
    x = tokens.transpose(0, 1)
    for block, norm in zip(embedder.blocks, embedder.norms, strict=True):
        y = block.forward_time_major(x)
        x = norm(x + y if embedder.residual else y)
    return x[-1]


@pytest.mark.parametrize(
    "make,dtype",
    [
        (lambda: MambaEmbedder(d_model=16, n_layers=3, d_state=4, d_conv=4), torch.float64),
        (lambda: MambaEmbedder(d_model=16, n_layers=3, d_state=4, d_conv=4), torch.float32),
        (lambda: MambaEmbedder(d_model=16, n_layers=2, residual=True, d_state=4), torch.float64),
        (lambda: TransformerEmbedder(d_model=16, n_layers=2, d_ffn=32), torch.float64),
        (lambda: TransformerEmbedder(d_model=16, n_layers=1, d_ffn=32), torch.float32),
    ],
)
def test_last_layer_on_the_last_token_alone_gives_the_same_output_and_gradients(make, dtype):
    """Both embedders read only the last token, so their last layer computes only what it needs
    (Mamba: gate and out_proj; Transformer: query, feed-forward and norms): the same values and
    gradients as every layer over every token (float32 runs the fused C block for Mamba)."""
    torch.manual_seed(0)
    embedder = make().to(dtype)
    with torch.no_grad():  # away from the init's constants, so every parameter matters
        for p in embedder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tokens = torch.randn(5, 7, 16, dtype=dtype, requires_grad=True)
    inputs = [tokens, *embedder.parameters()]
    fast, plain = embedder(tokens), _every_token_then_last(embedder, tokens)
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(fast, plain, **tolerance)
    upstream = torch.randn_like(fast)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_plain = torch.autograd.grad((plain * upstream).sum(), inputs)
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.skipif(
    cuda_kernels_available(), reason="checks the error when the kernels are missing"
)
def test_forcing_cuda_kernels_without_them_is_a_clear_error():
    block = MambaBlock(d_model=8, d_state=4, d_conv=4, kernels="mamba_ssm")
    with pytest.raises(
        RuntimeError, match="kernels='mamba_ssm' needs CUDA tensors and the 'cuda' extra"
    ):
        block(torch.randn(1, 3, 8))


@pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_kernels_available()),
    reason="needs a GPU and the 'cuda' extra (mamba-ssm)",
)
@pytest.mark.parametrize("d_conv", [4, 16])  # 4: causal_conv1d's kernel; 16 (paper): cuDNN conv
def test_cuda_kernels_match_the_pure_pytorch_path(d_conv):
    """The same weights through mamba_ssm's kernels and through our pure path, on the GPU:
    values and every parameter gradient agree (float32)."""
    torch.manual_seed(0)
    pure = MambaBlock(d_model=128, d_state=16, d_conv=d_conv, kernels="torch").cuda()
    fused = MambaBlock(d_model=128, d_state=16, d_conv=d_conv, kernels="mamba_ssm").cuda()
    fused.load_state_dict(pure.state_dict())
    x = torch.randn(32, 21, 128, device="cuda")
    out_pure, out_fused = pure(x), fused(x)
    torch.testing.assert_close(out_fused, out_pure, rtol=1e-3, atol=1e-4)
    upstream = torch.randn_like(out_pure)
    (out_pure * upstream).sum().backward()
    (out_fused * upstream).sum().backward()
    for (name, a), b in zip(pure.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(
            b.grad, a.grad, rtol=1e-3, atol=1e-3, msg=lambda m, name=name: f"{name}: {m}"
        )


# -- parameter counts --------------------------------------------------------------------------
def test_paper_parameter_counts_are_exact():
    assert param_counts("paper", "mamba")["embedder"] == 479_232
    assert param_counts("paper", "transformer")["embedder"] == 1_186_048
    report = params_report("paper")
    assert "479,232" in report and "1,186,048" in report
    c = param_counts("paper", "mamba")
    assert c["total"] == c["user_tower"] + c["item_tower"] > 2 * c["embedder"]


def test_d_token_192_gives_the_counts_of_the_papers_text():
    wide = make_config("paper", d_token=192)
    assert param_counts(wide, "mamba")["embedder"] == 1_026_048
    assert param_counts(wide, "transformer")["embedder"] == 1_875_328


# -- tokenizer ---------------------------------------------------------------------------------
def test_unknown_categories_share_the_reserved_row_and_nan_is_an_error():
    schema = Schema((Feature("age", "numeric"), Feature("sex", "categorical", ("f", "m"))))
    tok = FeatureTokenizer(schema, d_token=4)
    tokens = tok(FeatureTensors(torch.zeros(4, 1), torch.tensor([[2], [-1], [99], [1]])))
    assert tokens.shape == (4, 3, 4)
    assert torch.equal(tokens[0, 1], tokens[1, 1]) and torch.equal(tokens[0, 1], tokens[2, 1])
    assert not torch.equal(tokens[0, 1], tokens[3, 1])
    with pytest.raises(ValueError, match="'age'"):
        tok.check_finite(FeatureTensors(torch.tensor([[float("nan")]]), torch.tensor([[0]])))
    with pytest.raises(ValueError, match="'age'"):
        tok.check_finite(FeatureTensors(torch.tensor([[float("inf")]]), torch.tensor([[0]])))
    model = TwoTower.from_schemas(schema, schema, "mlp", "quick")
    with pytest.raises(ValueError, match="'age'"):  # where data enters a model
        model.embed_users(FeatureTensors(torch.tensor([[float("nan")]]), torch.tensor([[0]])))


def test_cls_token_is_last_and_is_the_constant_one_token():
    schema = Schema((Feature("a", "numeric"), Feature("c", "categorical", ("x", "y"))))
    tok = FeatureTokenizer(schema, d_token=4)
    tokens = tok(FeatureTensors(torch.tensor([[3.0], [-5.0]]), torch.tensor([[0], [1]])))
    cls = tok.numeric_weight[-1] + tok.numeric_bias[-1]
    torch.testing.assert_close(tokens[:, -1], cls.expand(2, 4))


@settings(max_examples=15, deadline=None)
@given(
    n_numeric=st.integers(0, 3),
    cards=st.lists(st.integers(1, 5), max_size=3),
    n=st.integers(1, 4),
    embedder=st.sampled_from(EMBEDDERS),
)
def test_any_schema_gives_the_documented_shapes(n_numeric, cards, n, embedder):
    features = [Feature(f"x{j}", "numeric") for j in range(n_numeric)]
    features += [
        Feature(f"c{j}", "categorical", tuple(map(str, range(c)))) for j, c in enumerate(cards)
    ]
    if not features:
        return
    schema = Schema(tuple(features))
    rng = np.random.default_rng(0)
    rows = Batch(
        rng.normal(size=(n, n_numeric)),
        np.stack([rng.integers(0, c, n) for c in cards], 1) if cards else np.zeros((n, 0)),
        np.arange(n),
    )
    tok = FeatureTokenizer(schema, d_token=8)
    assert tok(FeatureTensors.from_batch(rows)).shape == (n, len(features) + 1, 8)
    model = TwoTower.from_schemas(
        schema, schema, embedder, "quick", d_token=8, d_ffn=8, mlp_hidden=8
    )
    assert model(rows, rows).shape == (n,)
    assert model.score_all(rows, rows).shape == (n, n)


# -- scoring and caching -----------------------------------------------------------------------
@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_score_all_equals_pairwise_forward(embedder):
    model = toy_model(embedder).eval()
    users, items = toy_batches()
    with torch.no_grad():
        all_scores = model.score_all(users, items)
        n_u, n_i = len(users), len(items)
        pairs = model(users[np.repeat(np.arange(n_u), n_i)], items[np.tile(np.arange(n_i), n_u)])
    torch.testing.assert_close(all_scores, pairs.view(n_u, n_i), rtol=1e-5, atol=1e-6)


def test_item_dedupe_gives_the_same_embeddings_and_gradients():
    model = toy_model("mamba")
    _, items = toy_batches()
    repeated = items[[3, 1, 3, 3, 0, 1]]
    emb = model.embed_items(repeated)
    torch.testing.assert_close(emb[0], emb[2])
    model.item_tower.dedupe = False
    torch.testing.assert_close(emb, model.embed_items(repeated))


def test_item_cache_is_used_and_invalidated_by_updates_and_mode_changes():
    model = toy_model("transformer").eval()
    users, items = toy_batches()
    with pytest.raises(RuntimeError, match="cache_items"):
        model.score_all(users)
    model.cache_items(items)
    torch.testing.assert_close(model.score_all(users), model.score_all(users, items))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(users, items[: len(users)]).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="cache_items"):
        model.score_all(users)
    model.cache_items(items)
    model.train()
    with pytest.raises(RuntimeError, match="cache_items"):
        model.score_all(users)


def test_forward_rejects_unpaired_rows():
    model = toy_model()
    users, items = toy_batches()
    with pytest.raises(ValueError, match="paired"):
        model(users, items)


# -- determinism, files, compatibility ---------------------------------------------------------
@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_same_seed_same_weights_bit_for_bit(embedder):
    a, b, c = toy_model(embedder, seed=3), toy_model(embedder, seed=3), toy_model(embedder, seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert any(
        not torch.equal(va, vc)
        for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_save_load_round_trip_gives_identical_scores(tmp_path, embedder):
    model = toy_model(embedder, seed=1).eval()
    users, items = toy_batches()
    path = model.save(tmp_path / "m.safetensors")
    loaded = TwoTower.load(path)
    assert loaded.config == model.config
    assert loaded.user_schema == model.user_schema and loaded.item_schema == model.item_schema
    with torch.no_grad():
        assert torch.equal(loaded.score_all(users, items), model.score_all(users, items))
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(path)
    model.save(path, overwrite=True)


def test_mamba_residual_switch_keeps_the_weights_and_old_files_keep_their_layer(tmp_path):
    """``mamba_residual`` changes the layer, not the parameters; a file saved before the option
    existed (no key in its config) was built with the residual and must load that way, and one
    saved before ``head_activation`` existed with ReLU heads."""
    users, items = toy_batches()
    with_res = toy_model(seed=2, mamba_residual=True, head_activation="relu").eval()
    without = toy_model(seed=2, head_activation="relu").eval()
    assert without.config.mamba_residual is False  # the paper's layer is the default
    assert with_res.state_dict().keys() == without.state_dict().keys()
    without.load_state_dict(with_res.state_dict())
    with torch.no_grad():
        assert not torch.allclose(with_res.score_all(users, items), without.score_all(users, items))
    added_later = ("mamba_residual", "head_activation")
    meta = {
        "config": {k: v for k, v in vars(with_res.config).items() if k not in added_later},
        "user_schema": with_res.user_schema.to_dict(),
        "item_schema": with_res.item_schema.to_dict(),
    }
    old = write_model_file(tmp_path / "old.safetensors", with_res.state_dict(), meta)
    loaded = TwoTower.load(old)
    assert loaded.config.mamba_residual is True and loaded.config.head_activation == "relu"
    with torch.no_grad():
        assert torch.equal(loaded.score_all(users, items), with_res.score_all(users, items))


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_head_activation_keeps_the_weights_and_gelu_keeps_the_gradient_of_negative_units(embedder):
    """``head_activation`` changes the head's function, not its parameters. With every hidden
    unit of the item head below 0 for every item (the stall of
    docs/results/baseline_diagnosis.md) the paper's ReLU passes no gradient into the item
    embedder, GELU does."""
    users, items = toy_batches()
    relu, gelu = (toy_model(embedder, seed=3, head_activation=a) for a in ("relu", "gelu"))
    assert relu.state_dict().keys() == gelu.state_dict().keys()
    for name, tensor in relu.state_dict().items():
        assert torch.equal(tensor, gelu.state_dict()[name]), name
    gradients = {}
    for name, model in (("relu", relu), ("gelu", gelu)):
        tower = model.item_tower
        with torch.no_grad():  # every hidden unit at -0.5 or below for every item
            hidden = tower.embedder(tower.tokenizer(FeatureTensors.from_batch(items)))
            tower.head[0].bias -= tower.head[0](hidden).max(dim=0).values + 0.5
        model.score_all(users, items).square().sum().backward()
        gradients[name] = sum(float(p.grad.abs().sum()) for p in tower.embedder.parameters())
    assert gradients["relu"] == 0.0 and gradients["gelu"] > 0.0


def test_loading_wrong_files_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        TwoTower.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ValueError, match="junk.safetensors"):
        TwoTower.load(junk)
    other = write_model_file(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {})
    other.write_bytes(other.read_bytes().replace(b"recsim-ft.two-tower", b"someone-else.format"))
    with pytest.raises(ValueError, match="not a recsim-ft two-tower model"):
        TwoTower.load(other)
    good = toy_model().save(tmp_path / "good.safetensors")
    data = good.read_bytes()
    future = tmp_path / "future.safetensors"
    future.write_bytes(data.replace(b'\\"version\\": 2', b'\\"version\\": 9'))
    with pytest.raises(ValueError, match="version 9"):
        TwoTower.load(future)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        TwoTower.load(truncated)


def test_check_compatible_detects_other_schemas():
    model = toy_model()
    model.check_compatible(ToyEnv())
    with pytest.raises(ValueError, match="item schema"):
        model.check_compatible(ToyEnv(n_items=12))
    with pytest.raises(ValueError, match="user schema"):
        model.check_compatible(ToyEnv(n_groups=3))


def test_unknown_options_and_presets_are_named():
    with pytest.raises(TypeError, match="d_tokn"):
        toy_model(d_tokn=3)
    with pytest.raises(ValueError, match="huge"):
        TwoTower.from_env(ToyEnv(), preset="huge")
    with pytest.raises(ValueError, match="embedder"):
        TwoTower.from_env(ToyEnv(), embedder="rnn")
