import pytest
import torch

from mmim.timm_compat import import_timm
from mmim.trunk.encoder import VIT_SIZES, EncoderConfig, ViTEncoder
from mmim.trunk.position import sincos_2d


@pytest.mark.parametrize("size", list(VIT_SIZES))
def test_sizes_match_timm(size):
    dim, depth, heads = VIT_SIZES[size]
    cfg = EncoderConfig(size=size).resolved()
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (dim, depth, heads)


def test_parameter_names_follow_timm_vit():
    timm = import_timm()
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2)
    ours = ViTEncoder(EncoderConfig(size="tiny", depth=2))
    ref_keys = {k: v.shape for k, v in ref.state_dict().items() if k.startswith(("blocks.", "norm.", "cls_token"))}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_keys


def test_encoder_shapes_and_errors():
    enc = ViTEncoder(EncoderConfig(embed_dim=32, depth=1, num_heads=4))
    prefix, tokens = enc(torch.randn(3, 7, 32))
    assert prefix.shape == (3, 1, 32) and tokens.shape == (3, 7, 32)
    with pytest.raises(ValueError, match="unknown ViT size 'medium'"):
        EncoderConfig(size="medium").resolved()
    with pytest.raises(ValueError, match="not divisible"):
        EncoderConfig(embed_dim=30, depth=1, num_heads=4).resolved()


def test_sincos_2d_layout_columns_first():
    table = sincos_2d(8, (2, 3))
    assert table.shape == (6, 8)
    # first half encodes the column: tokens in one column share it
    assert torch.equal(table[0, :4], table[3, :4]) and not torch.equal(table[0, 4:], table[3, 4:])
    # second half encodes the row: tokens in one row share it
    assert torch.equal(table[0, 4:], table[1, 4:]) and not torch.equal(table[0, :4], table[1, :4])


def test_pos_every_block_adds_positions_before_each_block():
    torch.manual_seed(0)
    enc = ViTEncoder(EncoderConfig(embed_dim=16, depth=2, num_heads=2, cls_token=False, pos_every_block=True)).eval()
    x, pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    _, out = enc(x, pos=pos)
    ref = x
    for block in enc.blocks:
        ref = block(ref + pos)
    torch.testing.assert_close(out, enc.norm(ref))
    with pytest.raises(ValueError, match="pos_every_block"):
        enc(x)


def test_cls_pos_is_a_learned_parameter():
    enc = ViTEncoder(EncoderConfig(embed_dim=16, depth=1, num_heads=2, cls_pos=True, pos_every_block=True))
    assert "cls_pos" in dict(enc.named_parameters())
    prefix, tokens = enc(torch.randn(2, 3, 16), pos=torch.randn(2, 3, 16))
    assert prefix.shape == (2, 1, 16)


def test_num_prefix_tokens_are_learned_and_attended():
    """MultiMAE's ``num_global_tokens``: ``G`` distinct learned prefix tokens, each attended by the rest."""
    enc = ViTEncoder(EncoderConfig(embed_dim=16, depth=1, num_heads=2, num_prefix_tokens=3)).eval()
    assert enc.num_prefix == 3 and enc.cls_token.shape == (1, 3, 16)
    assert not torch.equal(enc.cls_token[0, 0], enc.cls_token[0, 1])
    x = torch.randn(2, 5, 16)
    prefix, tokens = enc(x)
    assert prefix.shape == (2, 3, 16) and tokens.shape == (2, 5, 16)
    with torch.no_grad():
        enc.cls_token[0, 2] += torch.randn(16)  # the third prefix token reaches the patch tokens
    assert not torch.allclose(enc(x)[1], tokens)
    assert ViTEncoder(EncoderConfig(embed_dim=16, depth=1, num_heads=2, cls_token=False, num_prefix_tokens=3)).num_prefix == 0
    with pytest.raises(ValueError, match="num_prefix_tokens: 0"):
        EncoderConfig(embed_dim=16, depth=1, num_heads=2, num_prefix_tokens=0).resolved()
