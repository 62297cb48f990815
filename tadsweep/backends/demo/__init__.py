"""Embedded demo backend: the whole study on a laptop CPU, in OpenTAD's file formats.

- `data`: synthetic THUMOS-like feature sequences + annotations (data.py)
- `pretrain`: masked-feature pretraining of a small temporal ViT, then frozen (pretrain.py)
- `train`: TIA adapters + peft LoRA + anchor-free head; OpenTAD log, resumable (train.py)
- `detect`: pre-NMS candidates of one checkpoint (detect.py)

Run `python -m tadsweep.backends.demo --help`.
"""
