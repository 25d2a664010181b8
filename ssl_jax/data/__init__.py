"""Host-side data: TFDS random-access sources and grain loaders.

`sources.get_source` opens a prepared dataset (ArrayRecord, no TensorFlow);
`pipeline.train_loader` / `pipeline.eval_batches` turn it into uint8 batches.
`python -m ssl_jax.data.prepare NAME --data_dir D` prepares a dataset once.
"""
