"""Tasks: VAL-PAT pretraining and the transfers (re-ID, attributes, text search, zero-shot).

Each module imports Keras: set ``KERAS_BACKEND`` first. Entry points that write a run folder:
`valpat_keras.tasks.pretraining.pretrain`, `valpat_keras.tasks.reid_training.train_reid`,
`valpat_keras.tasks.attributes.train_attributes` and `valpat_keras.tasks.search.train_search`.
"""
