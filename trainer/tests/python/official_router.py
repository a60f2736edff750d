"""The official Dr.LLM router block (parameterlab/dr-llm, models/modeling_*.py: `RouterBlock`),
rebuilt in torch from reading that code, run on router inputs our engine produced.

Usage: official_router.py ROUTERS.safetensors INPUTS.safetensors
  ROUTERS: `trainer export --format drllm` output (keys model.routers.{i}.linear{1,2}.{weight,bias},
           metadata num_windows).
  INPUTS:  tensors `p{j}.l{i}` [T, d] (the hidden state entering layer i for prompt j, its prompt
           rows) as our routed pass saw them.
Prints {"p{j}.l{i}": decision} as JSON (0 skip, 1 execute, 2 repeat: the official class index is
how often the layer runs, as ours).

The official block: Linear(d, 128) -> GELU(approximate="tanh") -> Linear(128, 3). Its input is
cut into min(num_windows, T) contiguous windows of T // that many rows from row 0 (the remainder
dropped), each window mean-pooled and routed on its own; the logits are averaged over windows and
the decision is their argmax.
"""
import json
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn


class RouterBlock(nn.Module):
    def __init__(self, d: int, hidden: int = 128, classes: int = 3):
        super().__init__()
        self.linear1 = nn.Linear(d, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.linear2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.linear2(self.act(self.linear1(x)))


class Routers(nn.Module):
    """Holds the blocks as the official base model does (`self.routers = nn.ModuleList(...)`),
    so the exported file loads with load_state_dict under the `model.` prefix."""

    def __init__(self, layers: int, d: int):
        super().__init__()
        self.routers = nn.ModuleList(RouterBlock(d) for _ in range(layers))


def decide(block: RouterBlock, h: torch.Tensor, num_windows: int) -> int:
    t, d = h.shape
    w = min(num_windows, t)
    size = t // w
    means = h[: w * size].reshape(w, size, d).mean(dim=1)
    p = next(block.parameters())
    logits = torch.stack([block(m.unsqueeze(0).to(p.dtype)) for m in means]).mean(dim=0)
    return int(torch.argmax(logits))


def main():
    routers_file, inputs_file = sys.argv[1], sys.argv[2]
    with safe_open(routers_file, "pt") as f:
        meta = f.metadata()
    tensors = load_file(routers_file)
    layers = int(meta["num_layers"])
    d = int(meta["hidden_size"])
    assert all(re.fullmatch(r"model\.routers\.\d+\.linear[12]\.(weight|bias)", k) for k in tensors)
    dtype = next(iter(tensors.values())).dtype
    model = nn.Module()
    model.model = Routers(layers, d).to(dtype)
    # strict: every official router parameter is in the file and nothing else is.
    model.load_state_dict(tensors, strict=True)
    out = {}
    with torch.no_grad():
        for key, h in load_file(inputs_file).items():
            layer = int(key.split(".l")[1])
            out[key] = decide(model.model.routers[layer], h, int(meta["num_windows"]))
    print(json.dumps({"dtype": str(dtype), "decisions": out}))


if __name__ == "__main__":
    main()
