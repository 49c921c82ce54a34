"""Pure scoring: no Kafka, no database. fit / score / (learn) / save / load on numpy batches."""
