"""``linewatch train defects``: a defect classifier from labelled examples, cross-validated, registered.

The training set comes from a folder of class folders (images, read as the pooled patch
features of the SKU's image anomaly model: :mod:`linewatch.defects.datasets`), a CSV or Parquet
table with a class column, or the label store's confirmed dispositions (``--from-labels``). The
classifier, its out-of-fold report and learning curve are :mod:`linewatch.defects.classifier`;
registering is :func:`linewatch.defects.registry.register_classifier`.

Which image model computes the features, in this order: ``--from-model DIR`` (a saved model
directory); the registry's champion for ``--sku`` (and ``--camera``), because that is the model
whose features the stream hands the classifier; else a PatchCore fitted on ``--fit-on DIR`` or
the set's ``train/good/``, which is registered as the SKU's image model too when the classifier
is (a classifier needs the stream to compute the same features).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from linewatch.cli.common import (
    ConfigOption,
    ImageSizeOption,
    PresetOption,
    ShadowOption,
    console,
    fmt,
    print_backtest,
    settings,
)
from linewatch.errors import ConfigError

if TYPE_CHECKING:
    from linewatch.config import Settings
    from linewatch.defects.datasets import TrainingSet

MODALITIES = ("frames", "spc", "signals")


def train_defects_cmd(
    data: Annotated[Path | None, typer.Option(
        "--data", help="DIR/<class>/*.png|jpg (one folder per class, 'good' among them), an MVTec-layout set "
        "(classes from test/<class>/), or a CSV/Parquet file with a class column and numeric feature columns")] = None,
    from_labels: Annotated[bool, typer.Option(
        "--from-labels", help="train on the label store's confirmed dispositions (see `linewatch labels`)")] = False,
    sku: Annotated[str | None, typer.Option("--sku", help="the SKU the classifier is for (frames: required to "
                                            "register)")] = None,
    camera: Annotated[str | None, typer.Option("--camera", help="frames: the camera it is for (default: any)")
                      ] = None,
    asset: Annotated[str, typer.Option(help="spc/signals: the asset it is for ('*' = any)")] = "*",
    modality: Annotated[str | None, typer.Option(
        help="frames, spc or signals (inferred: folders are frames, tables spc unless every feature is "
        "sensor.feature)")] = None,
    class_column: Annotated[str | None, typer.Option(
        "--class-column", help="tables: the class column (default: class, else defect_class)")] = None,
    columns: Annotated[str | None, typer.Option(help="tables: comma-separated feature columns (default: numeric)")
                       ] = None,
    from_model: Annotated[Path | None, typer.Option(
        "--from-model", help="frames: read the images with this saved image model (a model directory, e.g. a "
        "version's artifact_path)")] = None,
    fit_on: Annotated[Path | None, typer.Option(
        "--fit-on", help="frames: fit a PatchCore on these good images first, when the SKU has no image model "
        "(default: the set's train/good/)")] = None,
    preset: PresetOption = "fast",
    image_size: ImageSizeOption = None,
    target_far: Annotated[float, typer.Option(
        help="frames, when an image model is fitted and registered for the features: its false alarms per good "
        "part (as `train frames --target-far`)")] = 0.01,
    target_precision: Annotated[float, typer.Option(
        help="precision the accepted predictions must reach out of fold; below the confidence that reaches it "
        "the classifier answers 'unknown'")] = 0.95,
    folds: Annotated[int, typer.Option(help="cross-validation folds (fewer when a class is smaller)")] = 5,
    calibration: Annotated[str, typer.Option(
        help="none: the regularised regression's own probabilities (measured best calibrated); sigmoid: "
        "CalibratedClassifierCV when every class has 15 examples (see the report's calibration_error)")] = "none",
    curve: Annotated[bool, typer.Option("--curve/--no-curve", help="measure the learning curve (5, 10, 20, 50, "
                                        "all examples per class)")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write every figure to this JSON file")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="register the classifier as a model "
                                           "version (default), or only measure it")] = True,
    shadow: ShadowOption = False,
    config: ConfigOption = None,
) -> None:
    """Train a defect classifier, report cross-validated precision/recall/F1 per class, and register it.

    Include a 'good' class: the classifier also sees normal parts, and must not call them a defect.
    Classes with fewer than 2 examples are refused; fewer than 20 train with a 'not ready' warning.
    Below the confidence chosen on held-out predictions (--target-precision) it answers 'unknown'
    and the part stays an unclassified anomaly. Workers pick a registered version up without a restart.
    """
    from linewatch.defects.classifier import learning_curve, train_classifier
    from linewatch.defects.estimator import check_calibration

    check_calibration(calibration)  # before any image is read
    if (data is None) == (not from_labels):
        raise ConfigError("choose exactly one source: --data DIR|FILE or --from-labels")
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}; use one of {', '.join(MODALITIES)}")
    if (from_model is not None or fit_on is not None) and (data is None or not data.is_dir()):
        raise ConfigError("--from-model and --fit-on read images: use them with --data DIR")
    s = settings(config)
    with ExitStack() as services:
        database = _Database(services, s)
        if from_labels:
            tset, features_from = _from_labels(database.url(), modality, sku), {"source": "label store"}
        elif data is not None and data.is_dir():
            if modality not in (None, "frames"):
                raise ConfigError(f"{data} is a folder of images: its modality is frames, not {modality}")
            tset, features_from = _from_images(data, sku=sku, camera=camera, from_model=from_model, fit_on=fit_on,
                                               preset=preset, image_size=image_size, target_far=target_far,
                                               register=register, seed=seed, database=database, shadow=shadow, s=s)
        else:
            from linewatch.defects.datasets import table_training_set

            assert data is not None
            names = [c.strip() for c in columns.split(",")] if columns else None
            tset = table_training_set(data, class_column=class_column, modality=modality, columns=names, sku=sku)
            features_from = {"source": str(data)}
        _print_set(tset)
        with _stages() as progress:
            points = (learning_curve(tset.X, tset.y, tset.feature_names, seed=seed, folds=folds,
                                     calibration=calibration, progress=progress) if curve else [])
            clf, report = train_classifier(tset.X, tset.y, tset.feature_names, seed=seed, folds=folds,
                                           target_precision=target_precision, calibration=calibration,
                                           progress=progress,
                                           meta={"features_from": features_from, "learning_curve": points,
                                                 "source": tset.source, "skipped_files": tset.skipped,
                                                 "feature_model": tset.feature_model or features_from.get(
                                                     "model_version", features_from.get("version"))})
        ref = None
        if register:
            from linewatch.defects.registry import register_classifier
            from linewatch.detectors.bundle import ANY, Scope
            from linewatch.storage.connection import connect

            scope = (Scope(sku=tset.sku or sku or ANY, camera=camera or ANY) if tset.modality == "frames"
                     else Scope(asset=asset, sku=tset.sku or sku or ANY))
            with connect(database.url()) as conn:
                ref = register_classifier(conn, clf, modality=tset.modality, scope=scope, model_dir=s.model_dir,
                                          shadow=shadow)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    result = {**report, "learning_curve": points, "model_version": clf.version,
              "model_id": ref.model_id if ref else None, "modality": tset.modality, "sku": tset.sku or sku,
              "features_from": features_from, "skipped_files": tset.skipped, "n_skipped_files": len(tset.skipped)}
    print_backtest(_tables(report, points), result, json_out)
    if ref is not None:
        role = " as a shadow (promote it with `linewatch models promote`)" if shadow else ""
        console.print(f"registered {escape(ref.model_id)}@{ref.version}{role}; workers load it within "
                      f"LINEWATCH_MODEL_REFRESH_S = {s.model_refresh_s:g} s")
    else:
        console.print(f"not registered (--no-register); version {clf.version} measured only")


class _Database:
    """The configured database, or an embedded one started on first use (and stopped with the command)."""

    def __init__(self, services: ExitStack, s: Settings) -> None:
        self._services, self._settings, self._url = services, s, None

    def url(self) -> str:
        if self._url is None:
            from linewatch.embedded.stack import Stack
            from linewatch.storage.migrations import migrate

            stack = self._services.enter_context(Stack(self._settings, need_broker=False))
            migrate(stack.database_url)
            self._url = stack.database_url
        return self._url


def _from_labels(database_url: str, modality: str | None, sku: str | None) -> TrainingSet:
    """The label store's confirmed examples as a training set."""
    if modality is None:
        raise ConfigError("--from-labels needs --modality (frames, spc or signals)")
    try:
        from linewatch.defects.label_store import training_set
    except ModuleNotFoundError as e:
        raise ConfigError("--from-labels needs the label store (linewatch.defects.label_store), which this "
                          "installation lacks; train from --data instead") from e
    return training_set(database_url, modality=modality, sku=sku)


def _from_images(data: Path, *, sku: str | None, camera: str | None, from_model: Path | None, fit_on: Path | None,
                 preset: str, image_size: int | None, target_far: float, register: bool, seed: int,
                 database: _Database, shadow: bool, s: Settings) -> tuple[TrainingSet, dict[str, Any]]:
    """Pooled patch features of the class folders, read with the image model chosen as the module docstring says."""
    from linewatch.defects.datasets import image_training_set

    model, features_from = _feature_model(data, sku=sku, camera=camera, from_model=from_model, fit_on=fit_on,
                                          preset=preset, image_size=image_size, target_far=target_far,
                                          register=register, seed=seed, database=database, shadow=shadow, s=s)
    console.print(f"features: pooled patch features of {escape(features_from['description'])}")
    from linewatch.cli.common import counting_progress

    with counting_progress("feature extraction") as progress:
        tset = image_training_set(data, model, sku=sku, progress=progress)
    return tset, features_from


def _feature_model(data: Path, *, sku: str | None, camera: str | None, from_model: Path | None,
                   fit_on: Path | None, preset: str, image_size: int | None, target_far: float, register: bool,
                   seed: int, database: _Database, shadow: bool, s: Settings) -> tuple[Any, dict[str, Any]]:
    """The fitted PatchCore whose features the classifier reads, and a record of which it is."""
    from linewatch.detectors.bundle import ANY, ModelBundle

    if from_model is not None:
        bundle = ModelBundle.load(from_model)
        _check_image_model(bundle, str(from_model))
        return bundle.detector, {"model_dir": str(from_model), "version": bundle.version,
                                 "description": f"the model in {from_model} ({bundle.version})"}
    champion = None
    if register or fit_on is None:
        from linewatch.defects.registry import frames_model_for

        champion = frames_model_for(database.url(), sku=sku or ANY, camera=camera or ANY)
    if champion is not None and fit_on is None:
        return champion.detector, {"model_version": champion.version, "sku": champion.scope.sku,
                                   "description": f"the registry's champion for SKU {champion.scope.sku} "
                                                  f"({champion.version})"}
    if champion is not None and register:
        raise ConfigError(f"SKU {sku or ANY} is scored by image model {champion.version}: a registered classifier "
                          "must read that model's features, so drop --fit-on (or --no-register to only measure)")
    from linewatch.defects.datasets import good_training_folder

    folder = fit_on or good_training_folder(data)
    if folder is None:
        raise ConfigError(f"no image model to read {data} with: the registry has none for SKU {sku or ANY}; pass "
                          "--from-model DIR, --fit-on GOOD_DIR, or train one with `linewatch train frames`")
    return _fit_feature_model(folder, sku=sku, camera=camera, preset=preset, image_size=image_size,
                              target_far=target_far, register=register, seed=seed, database=database,
                              shadow=shadow, s=s)


def _fit_feature_model(folder: Path, *, sku: str | None, camera: str | None, preset: str, image_size: int | None,
                       target_far: float, register: bool, seed: int, database: _Database, shadow: bool,
                       s: Settings) -> tuple[Any, dict[str, Any]]:
    """Fit a PatchCore on ``folder``; registered as the SKU's image model when the classifier will be."""
    from linewatch.backtest.images import check_calibration_budget, load_frame
    from linewatch.cli.common import stage_progress
    from linewatch.defects.datasets import good_images
    from linewatch.detectors.bundle import ANY, Scope
    from linewatch.detectors.patchcore import PatchCore

    files = good_images(folder)
    if register:
        check_calibration_budget(len(files), None, target_far, "auto")  # before reading a single frame
    params = {"preset": preset, "image_size": image_size}
    reader = PatchCore(**params, seed=seed)
    reader._validate_params()
    frames = [load_frame(p, reader.model_size) for p in files]
    if not register:
        with stage_progress() as progress:
            model = reader.fit(frames, progress=progress)
        return model, {"fitted_on": str(folder), "registered": False,
                       "description": f"a PatchCore fitted on {len(files)} good images in {folder} (not registered)"}
    if sku is None:
        raise ConfigError("registering a frames classifier needs --sku: the image model fitted for its features "
                          "is registered for that SKU too")
    from linewatch.training import train_and_register

    with stage_progress() as progress:
        bundle, ref = train_and_register(frames, modality="frames", scope=Scope(sku=sku, camera=camera or ANY),
                                         database_url=database.url(), model_dir=s.model_dir, seed=seed,
                                         target_far=target_far,
                                         fold_order="shuffled", progress=progress, detector_params=params,
                                         shadow=shadow)
    return bundle.detector, {"fitted_on": str(folder), "registered": True, "model_id": ref.model_id,
                             "model_version": ref.version,
                             "description": f"a PatchCore fitted on {len(files)} good images in {folder}, "
                                            f"registered as {ref.model_id}@{ref.version}"}


def _check_image_model(bundle: Any, where: str) -> None:
    if not hasattr(bundle.detector, "pooled_features"):
        raise ConfigError(f"{where} holds a {bundle.detector_name} model; image classifiers read the pooled patch "
                          "features of a patchcore model")


def _stages() -> Any:
    from linewatch.cli.common import stage_progress

    return stage_progress({"cross-validation": "cross-validation", "learning curve": "learning curve"})


def _print_set(tset: TrainingSet) -> None:
    counts = ", ".join(f"{escape(c)} {n}" for c, n in tset.counts().items())
    console.print(f"training set: {len(tset.y)} {tset.modality} examples x {len(tset.feature_names)} features "
                  f"from {escape(tset.source)}: {counts}")
    if tset.skipped:
        console.print(f"[yellow]warning:[/] skipped {len(tset.skipped)} file(s) that could not be decoded:")
        for line in tset.skipped:
            console.print(f"  {escape(line)}")


def _tables(report: dict[str, Any], points: list[dict[str, Any]]) -> list[Any]:
    """Per-class figures, the confusion matrix and the learning curve, as rich tables."""
    from rich.table import Table

    classes = report["classes"]
    per_class = Table(title=f"out-of-fold figures ({report['folds']}-fold, unknown below "
                            f"{report['unknown_below']:.3g} for precision {report['target_precision']:g})")
    for column in ("class", "n", "precision", "recall", "f1", "f1 (forced)", "ready"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for c in classes:
        row = report["per_class"][c]
        ready = "[yellow]not ready[/]" if c in report["not_ready"] else "yes"
        per_class.add_row(escape(c), str(row["n"]), fmt(row["precision"]), fmt(row["recall"]), fmt(row["f1"]),
                          fmt(report["forced"]["per_class"][c]["f1"]), ready)
    per_class.add_row("[bold]macro / all", str(report["n"]), "", f"accuracy {fmt(report['accuracy'])}",
                      fmt(report["macro_f1"]), fmt(report["forced"]["macro_f1"]),
                      f"unknown {report['unknown_rate']:.1%}")
    confusion = Table(title="confusion (rows: true class, columns: predicted)")
    confusion.add_column("true \\ predicted")
    for c in [*classes, "unknown"]:
        confusion.add_column(escape(c), justify="right")
    for c in classes:
        confusion.add_row(escape(c), *(str(report["confusion"][c][p]) for p in [*classes, "unknown"]))
    points_table = Table(title="other operating points (out of fold): precision asked, threshold, parts classified")
    for column in ("target precision", "unknown below", "classified", "precision"):
        points_table.add_column(column, justify="right")
    for op in report["operating_points"]:
        threshold = f"{op['unknown_below']:.3g}" if op["reached"] else "not reached"
        points_table.add_row(f"{op['target_precision']:g}", threshold, f"{op['coverage']:.1%}", fmt(op["precision"]))
    tables = [per_class, confusion, points_table]
    if points:
        lc = Table(title="learning curve: cross-validated F1 (every part gets its most probable class)")
        lc.add_column("examples per class", justify="right")
        lc.add_column("macro F1", justify="right")
        for c in classes:
            lc.add_column(escape(c), justify="right")
        for p in points:
            size = "all" if p["size"] is None else str(p["size"])
            lc.add_row(size, f"{p['macro_f1']:.3f} ± {p['macro_f1_std']:.3f}",
                       *(fmt(p["per_class_f1"][c]) for c in classes))
        tables.append(lc)
    return tables
