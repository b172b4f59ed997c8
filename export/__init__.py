"""Derived model files: release checkpoints, static voice mixes and the MoeVoiceStudio ONNX graph."""
