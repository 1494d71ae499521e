import pytest
import torch

from clusterloss.data import load_dataset
from clusterloss.data.augment import normalize
from clusterloss.inference import embed_dataset
from clusterloss.models import build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test")


def test_rows_follow_dataset_order_and_match_one_image_at_a_time(digits):
    torch.manual_seed(0)
    model = build_model("convnet", embedding_dim=16, in_channels=1).train()
    mean, std = [0.3], [0.4]
    out = embed_dataset(model, digits, mean, std, batch_size=100)
    assert out.shape == (len(digits), 16) and out.dtype == torch.float32
    assert model.training, "the model's mode must be restored"
    model.eval()
    with torch.no_grad():
        for i in (0, 99, 100, len(digits) - 1):  # across batch boundaries and the short last batch
            single = model(normalize(digits.images[i : i + 1], mean, std))
            torch.testing.assert_close(out[i : i + 1], single, rtol=1e-5, atol=1e-5)
    assert torch.equal(out, embed_dataset(model, digits, mean, std, batch_size=100)), "deterministic"


def test_bf16_autocast_returns_float32_close_to_fp32(digits):
    torch.manual_seed(0)
    model = build_model("convnet", embedding_dim=8, in_channels=1)
    fp32 = embed_dataset(model, digits, [0.3], [0.4])
    bf16 = embed_dataset(model, digits, [0.3], [0.4], amp_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.05


def test_empty_dataset_is_an_error(digits):
    model = build_model("convnet", embedding_dim=8, in_channels=1)
    empty = digits.subset(torch.empty(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        embed_dataset(model, empty, [0.3], [0.4])
