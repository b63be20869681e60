"""Data: plain records, dataset loaders, the SynthPed generator and tf.data pipelines.

Nothing here imports the models.
"""
