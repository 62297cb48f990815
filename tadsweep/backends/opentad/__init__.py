"""OpenTAD backend: render params -> mmengine config, the LoRA backbone plugin, and the
train/detect wrappers around OpenTAD's tools/train.py and tools/test.py (run under torchrun)."""
