"""The Day-30 layer: defect classes learned from the anomalies operators confirmed, beside the anomaly models.

Plants start with anomaly detection because defects are rare and open-ended. The anomalies that
operators confirm with a defect class become a labelled set, and a class that recurs earns a
fast, precise classifier of its own, while the anomaly layer keeps catching whatever is new: the
two run side by side and the classifier never switches the anomaly layer off.

The classifier reads what the anomaly models already compute (pooled patch features for frames,
characteristics for SPC, window features for signals), so it needs no second backbone:

- :mod:`~linewatch.defects.classifier`: :class:`~linewatch.defects.classifier.DefectClassifier`
  (scikit-learn trained, calibrated, ONNX at run time) with an explicit ``unknown`` outcome, its
  cross-validated report and learning curve;
- :mod:`~linewatch.defects.estimator` and :mod:`~linewatch.defects.evaluation`: the estimator and
  its ONNX export, and the out-of-fold evaluation behind every figure in the report;
- :mod:`~linewatch.defects.datasets`: training sets from class folders of images and from tables;
- :mod:`~linewatch.defects.registry`: versions in the one model registry, and the cache a worker
  asks for the classifier of an event's scope.
"""
