#!/usr/bin/python3
"""Key names, shapes and dtypes of the PEFT adapters in /work/shared/fixtures, as JSON (the weights themselves are
not needed by the models tests, only the module names they address). Re-run: /usr/bin/python3 list_adapter_keys.py"""
import json, struct, torch

SRC = "/work/shared/fixtures/"
ADAPTERS = {"peft-regression-lora-opt125m": "adapter_model.bin", "peft-lora-gpt2-tigrinya": "adapter_model.safetensors",
            "peft-lora-tinyllama-added-tokens-fms": "adapter_model.safetensors"}
for name, f in ADAPTERS.items():
    path = SRC + name + "/" + f
    if f.endswith(".bin"):
        keys = {k: list(v.shape) for k, v in torch.load(path, map_location="cpu").items()}
    else:
        b = open(path, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        keys = {k: v["shape"] for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
    with open(name + ".keys.json", "w") as out:
        json.dump(dict(sorted(keys.items())), out, indent=1)
    print(name, len(keys))
