"""Pure machine learning for Shelfsight: no Kafka, Redis or Qdrant imports here."""
