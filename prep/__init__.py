"""Dataset preparation stage: `resample.py` (raw clips -> 44.1 kHz mono int16), `preprocess_flist_config.py`
(train/val file lists and the generated configs) and `preprocess_hubert_f0.py` (per-clip features)."""
