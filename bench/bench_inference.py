"""All structures of one image: one batched ``segment`` call (image encoded once) vs one ``generate`` per structure.

    python bench/bench_inference.py                                  # the bundled tiny VLM on CPU (goal: >= 10x)
    python bench/bench_inference.py --shape 3b-448 --device cuda     # PaliGemma 2 3B/448-shaped, random bf16 weights

Both paths run in the same process on the same image and prompts; the answers must be identical (greedy). The
anchor (docs/anchors.md, H200, 3B/448): about 3.4 s for ~80 structures when each batched prompt re-encodes the image;
goal <= 1 s. Results go to bench/results/inference_<shape>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessorList

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.answer_contract import AnswerContract
from chexanatomy.codec import default_tokenizer
from chexanatomy.inference import VLMSegmenter, default_vlm_structures, load_segmenter

ANCHOR_3B_448_S = 3.4


def paligemma2_3b_shaped(image_size: int):
    """A PaliGemma 2 3B-shaped model (SigLIP so400m/14 + Gemma 2 2B, 257,216-entry vocabulary), random weights."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": image_size,
            "patch_size": 14,
            "projection_dim": 2304,
        },
        text_config={
            "model_type": "gemma2",
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "vocab_size": 257216,
            "max_position_embeddings": 8192,
            "sliding_window": 4096,
        },
        projection_dim=2304,
        hidden_size=2304,
        vocab_size=257216,
        image_token_index=257152,
    )
    config.text_config.num_image_tokens = (image_size // 14) ** 2
    config._attn_implementation = "eager"
    return PaliGemmaForConditionalGeneration(config)


def build_segmenter(shape: str, device: str) -> VLMSegmenter:
    """The bundled tiny VLM, or a 3B-shaped random model behind the tiny processor re-sized to its image grid."""
    if shape == "tiny":
        return load_segmenter("bundled-vlm", device=device)
    tiny = load_segmenter("bundled-vlm", device="cpu")
    size = int(shape.split("-")[1])
    processor = tiny.processor
    processor.image_processor.size = {"height": size, "width": size}
    processor.image_seq_length = processor.image_processor.image_seq_length = (size // 14) ** 2
    model = paligemma2_3b_shaped(size).to(device, torch.bfloat16)
    model.config.image_token_id = processor.image_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return VLMSegmenter(model, processor, default_tokenizer(), max_new_tokens=21)


def one_by_one(segmenter: VLMSegmenter, image: Image.Image, prompts: list[str]) -> list[str]:
    """The naive path: one processor + generate call per structure (the image preprocessed and encoded each time),
    under the segmenter's answer contract when it has one, as the batched path."""
    answers = []
    for prompt in prompts:
        inputs = segmenter.processor(text=f"<image>{prompt}", images=image.convert("RGB"), return_tensors="pt")
        inputs.pop("labels", None)
        inputs = inputs.to(segmenter.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(segmenter.model.dtype)
        budget = {"max_new_tokens": segmenter.max_new_tokens}
        if segmenter.constrained:  # the same answer contract as the batched path: only batching and encoding differ
            contract = AnswerContract.for_prompts(segmenter.processor.tokenizer, [prompt], inputs["input_ids"].shape[1])
            budget = {"max_new_tokens": contract.max_new_tokens, "logits_processor": LogitsProcessorList([contract])}
        with torch.no_grad():
            out = segmenter.model.generate(**inputs, **budget, do_sample=False)
        answers += segmenter.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answers


def timed(fn, device: str, repeats: int):
    """(result, best seconds of ``repeats`` runs) with device synchronisation."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=["tiny", "3b-224", "3b-448"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--structures", type=int, default=80, help="how many structures of the image to ask for")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    segmenter = build_segmenter(args.shape, args.device)
    names = [n for n in default_vlm_structures() if n in STRUCTURES][: args.structures]
    prompts = [f"segment {STRUCTURES[n].display}" for n in names]
    image = Image.fromarray((np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8), mode="L")
    batched, t_batched = timed(lambda: segmenter.generate_answers(image, prompts), args.device, args.repeats)
    single, t_single = timed(lambda: one_by_one(segmenter, image, prompts), args.device, 1)
    result = {
        "shape": args.shape,
        "device": args.device,
        "structures": len(prompts),
        "batched_s": round(t_batched, 3),
        "one_generate_per_structure_s": round(t_single, 3),
        "speedup": round(t_single / t_batched, 2),
        "identical_answers": batched == single,
        "anchor_3b_448_s": ANCHOR_3B_448_S if args.shape == "3b-448" else None,
    }
    print(
        f"{len(prompts)} structures of one image ({args.shape}, {args.device}): batched {t_batched:.2f} s, "
        f"one generate per structure {t_single:.2f} s -> {result['speedup']:.1f}x (goal >= 10x); "
        f"identical answers: {result['identical_answers']}"
    )
    if args.shape == "3b-448":
        print(
            f"anchor (each prompt re-encodes the image): {ANCHOR_3B_448_S} s -> "
            f"ours/anchor {t_batched / ANCHOR_3B_448_S:.2f} (goal <= 1 s)"
        )
    out = Path(__file__).parent / "results" / f"inference_{args.shape}_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
