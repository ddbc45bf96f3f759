"""GPU checks of quantized loading (issue 14): 4-bit QLoRA + DecPO + share_prompt on the tiny random Llama.

What a GPU session runs (well under a minute after the imports; each check prints one line and the summary
is written as JSON to ``$OUT/gpu_checks.json`` when ``$OUT`` is set):

- ``4bit-nf4`` / ``4bit-nf4-gc`` / ``4bit-fp4-nested``: the tiny model saved to a folder, loaded with
  ``load_in_4bit`` (bitsandbytes), `prepare_for_kbit`, LoRA on q/v/up_proj, DecPO (regularizer on the last
  block's ``mlp.up_proj``) with ``share_prompt``, without and with gradient checkpointing: the hooked module
  is peft's ``Linear4bit``, the hooks capture finite activations, the loss and the LoRA gradients are finite,
  two training steps log a finite ``loss/decorr``;
- ``8bit``: the same with ``load_in_8bit``, two steps;
- ``refusals``: 4 and 8 bits at once, a GGUF model and the in-process tiny model are refused.

Without CUDA or without bitsandbytes it prints why and exits 0 (nothing to check), unless ``--cpu``: the same
checks on bitsandbytes' CPU backend (bitsandbytes >= 0.48), decpo's CUDA guard bypassed: to check this script
on a machine without a GPU. Exit code 1 when a check fails.

    python benchmarks/gpu_checks.py                 # on the GPU machine (pip install bitsandbytes first)
    python benchmarks/gpu_checks.py --cpu           # the same path on a CPU, bitsandbytes' CPU backend
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on the Hub

PAIRS = [
    {"prompt": "What is 2 + 2?", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Is the sky blue?", "chosen": " Yes, it is.", "rejected": " No"},
    {"prompt": "I think 3 + 3 = 7. Question: What is 3 + 3?", "chosen": " 6", "rejected": " 7"},
    {"prompt": "Name a fox.", "chosen": " The quick brown fox", "rejected": " A dog"},
    {"prompt": "What is 9 - 4?", "chosen": " 5", "rejected": " 13"},
    {"prompt": "Agree?", "chosen": " (B) Disagree", "rejected": " (A) Agree"},
    {"prompt": "Count: 1 2 3", "chosen": " 4", "rejected": " 9 9"},
    {"prompt": "Answer:", "chosen": " yes", "rejected": " no no no"},
]


def save_tiny(folder: Path) -> Path:
    from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(vocab_size=len(tokenizer), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def kbit_trainer(folder: Path, out: Path, *, cpu: bool, gradient_checkpointing: bool, **options):
    from datasets import Dataset
    from peft import LoraConfig

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import load_model, load_tokenizer, prepare_for_kbit
    from decpo.training.trainer import DecPOTrainer

    model = load_model(str(folder), device="cpu" if cpu else None, **options)
    model = prepare_for_kbit(model, gradient_checkpointing=gradient_checkpointing)
    args = DecPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=cpu,
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        precompute_ref_log_probs=False,
        share_prompt=True,
        disable_tqdm=True,
        seed=0,
        reg_layers=[-1],
        reg_weight=0.1,
    )
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
    )
    return DecPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=load_tokenizer(str(folder)),
        peft_config=lora,
    )


def check_train(
    folder: Path, out: Path, *, cpu: bool, gradient_checkpointing: bool = False, **options
) -> dict:
    import torch

    from decpo.models import capture_activations, is_quantized, site_module

    trainer = kbit_trainer(folder, out, cpu=cpu, gradient_checkpointing=gradient_checkpointing, **options)
    model = trainer.model
    assert is_quantized(model), "the model is not quantized"
    module, _ = site_module(model, 1, "mlp.up_proj")
    bits = "4bit" if options.get("load_in_4bit") else "8bit"
    assert bits in type(module).__name__, (
        f"the hooked module is {type(module).__name__}, not a {bits} LoRA layer"
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model.train()
    with capture_activations(model, [1], "mlp.up_proj") as acts:
        loss = trainer.compute_loss(model, batch)
    assert torch.isfinite(loss), f"loss {loss.item()}"
    assert 1 in acts and torch.isfinite(acts[1]).all(), "no finite activations captured at mlp.up_proj"
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and "up_proj" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "LoRA gradients missing"
    model.zero_grad()
    result = trainer.train()
    decorr = [m["loss/decorr"] for m in trainer.state.log_history if "loss/decorr" in m]
    assert math.isfinite(result.training_loss) and decorr and all(map(math.isfinite, decorr)), "non-finite"
    return {
        "first_loss": round(loss.item(), 6),
        "train_loss": round(result.training_loss, 6),
        "loss/decorr": decorr,
        "hooked": type(module).__name__,
        "device": str(next(model.parameters()).device),
    }


def check_refusals(folder: Path) -> dict:
    from decpo.models import DEFAULT_NAME, TINY_NAME, ModelError, load_model

    seen = {}
    for label, name, options in [
        ("4+8 bits", str(folder), dict(load_in_4bit=True, load_in_8bit=True)),
        ("gguf", "model.Q4_K_M.gguf", dict(load_in_4bit=True)),
        ("default", DEFAULT_NAME, dict(load_in_8bit=True)),
        ("tiny", TINY_NAME, dict(load_in_4bit=True)),
    ]:
        try:
            load_model(name, **options)
        except ModelError as e:
            seen[label] = str(e)
        else:
            raise AssertionError(f"{label}: loaded, expected a ModelError")
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu", action="store_true", help="bitsandbytes' CPU backend, decpo's CUDA guard off"
    )
    args = parser.parse_args(argv)
    import torch

    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if not args.cpu and not (torch.cuda.is_available() and has_bnb):
        why = "no CUDA" if not torch.cuda.is_available() else "bitsandbytes is not installed"
        print(f"gpu_checks: skipped ({why}); 4-bit/8-bit loading needs a CUDA GPU and bitsandbytes")
        return 0
    if not has_bnb:
        print("gpu_checks: --cpu needs bitsandbytes (>= 0.48, with its CPU backend)")
        return 0
    from decpo.models import loading

    guard = loading.check_quantizable
    if args.cpu:
        loading.check_quantizable = lambda *a, **k: None  # the CUDA guard, off for the CPU backend
    import bitsandbytes

    env = {
        "torch": torch.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else "cpu",
    }
    print("gpu_checks:", env)
    checks = {
        "4bit-nf4": dict(load_in_4bit=True),
        "4bit-nf4-gc": dict(load_in_4bit=True, gradient_checkpointing=True),
        "4bit-fp4-nested": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True),
        "8bit": dict(load_in_8bit=True),
    }
    results: dict[str, dict] = {}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny(Path(tmp) / "tiny")
        for name, options in checks.items():
            t0 = time.perf_counter()
            try:
                results[name] = {"ok": True, **check_train(folder, Path(tmp) / name, cpu=args.cpu, **options)}
            except Exception as e:  # report every check, then fail
                failed += 1
                results[name] = {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "trace": traceback.format_exc(),
                }
            results[name]["seconds"] = round(time.perf_counter() - t0, 2)
            status = "ok" if results[name]["ok"] else "FAILED " + results[name]["error"]
            print(f"  {name}: {status} ({results[name]['seconds']} s)", flush=True)
        loading.check_quantizable = guard  # the refusals are the guard's own
        try:
            results["refusals"] = {"ok": True, "messages": check_refusals(folder)}
        except Exception as e:
            failed += 1
            results["refusals"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(
            f"  refusals: {'ok' if results['refusals']['ok'] else 'FAILED ' + results['refusals']['error']}"
        )
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_checks.json").write_text(json.dumps({"env": env, **results}, indent=1))
    print(f"gpu_checks: {len(results) - failed} of {len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
