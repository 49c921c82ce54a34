"""The Day-30 layer: defect classes learned from the anomalies operators confirmed, beside the anomaly models.

Day 1 has no defect labels, so the anomaly models watch alone. Every disposition that confirms a
defect and names its class (``linewatch disposition ALERT_ID --label true_defect --class scratch``) adds a
labelled example to the label store (:mod:`~linewatch.defects.label_store`); a class with enough
examples gets a classifier trained on the features the anomaly models already compute
(:mod:`~linewatch.defects.classifier`), registered like any model, and the stream attaches its class
and route to scores and alerts (:mod:`~linewatch.defects.stream`). The anomaly layer never switches
off: whatever the classifier does not recognise stays an unclassified anomaly.

The classifier reads what the anomaly models already compute (pooled patch features for frames,
characteristics for SPC, window features for signals), so it needs no second backbone:

- :mod:`~linewatch.defects.classifier`: :class:`~linewatch.defects.classifier.DefectClassifier`
  (trained in scikit-learn, run in ONNX) with an explicit ``unknown`` outcome, its cross-validated
  report and learning curve;
- :mod:`~linewatch.defects.estimator` and :mod:`~linewatch.defects.evaluation`: the estimator and
  its ONNX export, and the out-of-fold evaluation behind every figure in the report;
- :mod:`~linewatch.defects.datasets`: training sets from class folders of images and from tables;
- :mod:`~linewatch.defects.registry`: versions in the one model registry, and the cache a worker
  asks for the classifier of an event's scope.
"""
