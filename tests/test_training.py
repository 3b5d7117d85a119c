"""The local training loop's helpers."""

import torch

from fedfocal_app.training import crop_flip


def test_crop_flip_keeps_shape_and_moves_pixels_per_example():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, g, padding=2)
    assert out.shape == x.shape
    # Every output pixel is an input pixel of the same example and channel, or padding.
    for i in range(2):
        for ch in range(3):
            assert set(out[i, ch].flatten().tolist()) <= set(x[i, ch].flatten().tolist()) | {0.0}
    outs = [crop_flip(x, g, padding=2) for _ in range(20)]
    assert any(not torch.equal(o, x) for o in outs)
