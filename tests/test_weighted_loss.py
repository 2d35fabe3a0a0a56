"""Per-token loss weights (Prediction.weight) and the element-wise losses' reductions."""

import pytest
import torch

from mmim.components.contrastive_loss import CosineLoss
from mmim.components.regression_loss import L1Loss, MSELoss, SmoothL1Loss
from mmim.model import ModelOutput, Stream, add_stream_loss
from mmim.types import JointMask, Prediction


def test_weighted_token_reduction_counts_only_weighted_tokens():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    weight = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    got = MSELoss()(pred, target, weight=weight).total
    want = ((pred - target) ** 2).mean(-1)[weight].mean()
    assert torch.allclose(got, want, atol=1e-7)
    # unweighted equals all-ones weights equals the plain mean
    assert torch.allclose(MSELoss()(pred, target).total, ((pred - target) ** 2).mean(), atol=1e-7)
    assert torch.allclose(L1Loss()(pred, target, weight=torch.ones(2, 6)).total, (pred - target).abs().mean(), atol=1e-7)


def test_sample_reduction_averages_per_sample_and_skips_empty_samples():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    weight = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    got = SmoothL1Loss(reduction="sample")(pred, target, weight=weight).total
    d = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none").mean(-1)
    want = (d[0, :2].mean() + d[2].mean()) / 2
    assert torch.allclose(got, want, atol=1e-7)
    assert torch.isfinite(MSELoss(reduction="sample")(pred, target, weight=torch.zeros(3, 5)).total)


def test_bad_reduction_and_weight_shape_are_named():
    with pytest.raises(ValueError, match="reduction"):
        MSELoss(reduction="batch")
    with pytest.raises(ValueError, match="weight"):
        MSELoss()(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), weight=torch.ones(2, 4))


def test_weighted_prediction_on_a_loss_without_weights_is_a_clear_error():
    assert not CosineLoss.supports_weight and MSELoss.supports_weight  # declared, not discovered
    stream = Stream(None, None, None, CosineLoss(), None)
    out = ModelOutput(torch.zeros(()), JointMask(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool),
                                                 ("video",), (2,)))
    pred = Prediction(torch.zeros(1, 2, 3), torch.arange(2)[None], weight=torch.ones(1, 2))
    with pytest.raises(TypeError, match="stream 'video'.*CosineLoss"):
        add_stream_loss(out, "video", stream, pred, torch.zeros(1, 2, 3))
    stream.loss = MSELoss()
    add_stream_loss(out, "video", stream, pred, torch.ones(1, 2, 3))
    assert torch.allclose(out.loss, torch.tensor(1.0))
