"""Image models as deployable versions: training, registration, the per-SKU/camera cache and the CLI.

The detector itself (:mod:`linewatch.detectors.patchcore`) knows nothing about databases or
SKUs; this package turns a fitted, calibrated PatchCore into a ``model_versions`` row that
the frames agent picks up by the frame's SKU and camera.
"""
