"""The small Fashion-MNIST models of the pooling experiments (rnnpool.models.small)."""

import pytest
import torch

from rnnpool.models import create_model, list_models

ABLATION = [n for n in list_models("fmnist_cnn_*")]


def test_registered():
    assert set(ABLATION) == {"fmnist_cnn_rnnpool", "fmnist_cnn_avgpool", "fmnist_cnn_maxpool",
                             "fmnist_cnn_convpool", "fmnist_cnn_renet", "fmnist_cnn_base",
                             "fmnist_cnn_rnnpool_hard"}
    assert set(list_models("fmnist_probe_*")) == {"fmnist_probe_rnnpool", "fmnist_probe_conv",
                                                 "fmnist_probe_avg", "fmnist_probe_max"}


@pytest.mark.parametrize("name", ABLATION)
def test_every_downsampler_hands_on_the_same_7x7x32_map(name):
    m = create_model(name).eval()
    x = torch.randn(2, 1, 28, 28)
    assert m.pool(m.stem(x)).shape == (2, 32, 7, 7)
    assert m(x).shape == (2, 10)


def test_probe_features_and_size_check():
    x = torch.randn(3, 1, 28, 28)
    assert create_model("fmnist_probe_rnnpool").forward_features(x).shape == (3, 128, 1, 1)
    assert create_model("fmnist_probe_conv").forward_features(x).shape == (3, 128, 1, 1)
    avg = create_model("fmnist_probe_avg")
    torch.testing.assert_close(avg.forward_head(avg.forward_features(x), pre_logits=True),
                               x.mean((2, 3)))
    with pytest.raises(ValueError, match="img_size"):
        create_model("fmnist_probe_rnnpool")(torch.randn(1, 1, 56, 56))
