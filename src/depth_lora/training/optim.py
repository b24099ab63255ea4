"""The optimiser's parameter groups: the body and the head, each with its own learning rate and
weight decay, as published depth fine-tuning does (Depth Anything V2's metric models train the
decoder at 10x the encoder's rate; LoRA adaptations train a head beside the adapters).

The body is what the adapters adapt: the LoRA matrices, or, under a full fine-tune, the backbone
and neck weights. The head is the DPT head, trained in full (PEFT's `modules_to_save` copy under
LoRA). With LoRA+ (Hayou et al. 2024) the LoRA B matrices are a part of their own, at a multiple
of the body's rate (the groups of PEFT's `create_loraplus_optimizer`, beside our head group, which
that function has no place for). Each part is split again into decayed and not-decayed weights,
the Trainer's way (biases and norms get no weight decay).
"""

from __future__ import annotations

from torch import nn

PARTS = ("body", "lora_B", "head")


def part_of(name: str, parts=("body", "head")) -> str:
    """'head' for a parameter of the DPT head (also PEFT's modules_to_save copy); 'lora_B' for a
    LoRA B matrix when `parts` has that part (LoRA+); else 'body'."""
    pieces = name.split(".")
    if "head" in pieces:
        return "head"
    return "lora_B" if "lora_B" in pieces and "lora_B" in parts else "body"


def parameter_groups(model: nn.Module, decay_names, rates: dict[str, tuple[float, float]]) -> list[dict]:
    """The trainable parameters of `model` in named groups for torch.optim.

    decay_names: the parameter names that take weight decay (Trainer.get_decay_parameter_names);
    rates: part -> (learning rate, weight decay) for "body", "head" and optionally "lora_B" (LoRA+;
    without it the B matrices are body). A group without parameters is left out.
    """
    decay_names = set(decay_names)
    groups = []
    for part in (p for p in PARTS if p in rates):
        lr, weight_decay = rates[part]
        for decayed in (True, False):
            params = [p for n, p in model.named_parameters()
                      if p.requires_grad and part_of(n, rates) == part and (n in decay_names) == decayed]
            if params:
                groups.append({"name": part if decayed else f"{part}_no_decay", "params": params, "lr": lr,
                               "weight_decay": weight_decay if decayed else 0.0})
    return groups


def describe_groups(optimizer) -> list[dict]:
    """What each group trains, for depth_lora.json: name, parameter count, peak lr, weight decay."""
    return [{"name": g.get("name", f"group_{i}"), "parameters": sum(p.numel() for p in g["params"]),
             "learning_rate": g.get("initial_lr", g["lr"]), "weight_decay": g["weight_decay"]}
            for i, g in enumerate(optimizer.param_groups)]
