"""The Day-30 layer: defect classes learned from the anomalies operators confirmed, beside the anomaly models.

Day 1 has no defect labels, so the anomaly models watch alone. Every disposition that confirms a
defect and names its class (``linewatch disposition ALERT_ID --label true_defect --class scratch``) adds a
labelled example to the label store (:mod:`~linewatch.defects.label_store`); a class with enough
examples gets a classifier trained on the features the anomaly models already compute
(:mod:`~linewatch.defects.classifier`), registered like any model, and the stream attaches its class
and route to scores and alerts (:mod:`~linewatch.defects.stream`). The anomaly layer never switches
off: whatever the classifier does not recognise stays an unclassified anomaly.
"""
