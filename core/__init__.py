"""The toolkit's floor below every stage: config files, atomic writes, checkpoints, guarded
unpickling, feature-file names, run logging and the device rule. Imports only stdlib, numpy and torch."""
