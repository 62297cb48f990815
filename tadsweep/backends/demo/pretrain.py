"""Self-supervised pretraining of the demo backbone (the stand-in for VideoMAE's weights):
VideoMAE's masked modelling on the training videos' feature steps, half of them masked in chunks;
later training runs freeze the result."""

import time
from pathlib import Path

import torch
from torch import nn

from tadsweep.backends.demo import data
from tadsweep.backends.demo.io import derive_seed, setup_torch, torch_save
from tadsweep.backends.demo.model import DEFAULT_ARCH, Backbone

EPOCHS = 40
BATCH = 8
LR = 2e-3
MASK_CHUNK = 8  # steps per masking chunk
MASK_RATIO = 0.5
VISIBLE_WEIGHT = 0.5


def chunk_mask(batch: int, seq_len: int, g: torch.Generator) -> torch.Tensor:
    chunks = (seq_len + MASK_CHUNK - 1) // MASK_CHUNK
    scores = torch.rand(batch, chunks, generator=g)
    chosen = scores.argsort(dim=1)[:, : int(chunks * MASK_RATIO)]
    mask = torch.zeros(batch, chunks, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    return mask.repeat_interleave(MASK_CHUNK, dim=1)[:, :seq_len]


def pretrain(data_dir: str | Path, out: str | Path, seed: int, epochs: int = EPOCHS) -> dict:
    start = time.time()
    setup_torch(seed)
    ds = data.load(data_dir)
    feats = torch.stack([v.feats for v in ds.train])
    n, seq_len, feat_dim = feats.shape
    backbone = Backbone(feat_dim, seq_len, **DEFAULT_ARCH)
    decoder = nn.Linear(DEFAULT_ARCH["dim"], feat_dim)
    params = list(backbone.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.05)
    steps = epochs * max(n // BATCH, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(derive_seed(seed, 1))
    losses = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(max(n // BATCH, 1)):
            x = feats[order[i * BATCH : (i + 1) * BATCH]]
            mask = chunk_mask(x.shape[0], seq_len, g)
            recon = decoder(backbone(x, mask))
            err = ((recon - x) ** 2).mean(dim=-1)
            # Visible steps count too: without them the features of unmasked steps (all steps,
            # once frozen for detection) would be unconstrained.
            loss = err[mask].mean() + VISIBLE_WEIGHT * err[~mask].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    info = {
        "seed": seed,
        "epochs": epochs,
        "first_loss": losses[0],
        "final_loss": sum(losses[-5:]) / len(losses[-5:]),
        "seconds": round(time.time() - start, 2),
    }
    config = dict(DEFAULT_ARCH, feat_dim=feat_dim, seq_len=seq_len)
    torch_save({"config": config, "state_dict": backbone.state_dict(), "info": info}, out)
    return info
