"""The PaliGemma segmentation-token contract: masks and boxes <-> `<loc>`/`<seg>` answer strings.

One object is written `<locY0><locX0><locY1><locX1><seg..>x16 name`; several objects in one answer
are joined with " ; " (docs/mask-tokens.md). Prompts are `segment {names}` and `detect {names}`.
Parsing, validity rules and the crop/paste geometry are written by hand: no library implements them.

Box convention (pixels), used everywhere in this module:
    `box_yxyx` = (y0, x0, y1, x1), float pixel *edges*: (y0, x0) is the top-left corner of the first
    pixel inside (inclusive), (y1, x1) the bottom-right edge (exclusive). A box over rows 10..19 and
    columns 5..7 is (10, 5, 20, 8); the full H x W image is (0, 0, H, W).
    Normalised coordinate = px / H for y and px / W for x, in [0, 1].
    Token value = round(v * 1023), rounding half to even like big_vision's `tf.round`, clipped to
    0..1023. Decoding uses the same 1023: px = token / 1023 * size. (The paper's released code divides
    by 1024 when decoding; we use 1023 on both sides so encode and decode are inverse.)
    For an image side of at most 1023 px an integer box survives encode -> decode -> round exactly.

Masks are cropped to the box rounded to whole pixels and resized to 64x64 for the codec: "bilinear"
(anti-aliased, a soft mask in [0, 1]; the big_vision reference and the default) or "nearest" (the
paper's code, which also widened the box by 10 px). The two give different codes: a dataset card must
state which it used (`MaskTokenizer.settings()`).

Decoding draws the codec's 64x64 map into the box at the original image resolution (bilinear, then
> 0). The box's pixel rows are round(y0)..round(y1)-1, at least one row (likewise columns); big_vision
truncates with int() instead, which can move an edge by one pixel. An answer is read chunk by chunk, and at most
`MAX_OBJECTS_PER_ANSWER` objects (128, more than the vocabulary's structures) are decoded: the rest of a longer
answer becomes one invalid object, so a runaway answer costs at most 129 masks, never one per chunk.

Example:
    tokenizer = MaskTokenizer(codec)  # codec: a MaskVQVAE
    targets = tokenizer.encode(masks, ["left lung", "heart"])  # masks [2, H, W] bool
    answer = join_objects(targets)
    objects = tokenizer.decode(answer, image_size=(H, W))  # [DecodedObject(name, box_yxyx, mask, valid)]
"""

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice, takewhile
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .masks import tight_box

# The token contract's numbers (the codec, chexanatomy.vqvae, is built from them).
LOC_MAX = 1023  # 1024 `<loc>` tokens, values 0..1023
NUM_SEG = 128  # 128 `<seg>` tokens, values 0..127: the codebook size
CODES_PER_MASK = 16  # a 4x4 grid of codes, row-major
MASK_SIZE = 64  # the codec's crop side
OBJECT_SEPARATOR = " ; "
TASKS = ("segment", "detect")
MAX_OBJECTS_PER_ANSWER = 128  # decoded per answer; the vocabulary has 110 structures, so more is runaway text

ResizeMode = Literal["bilinear", "nearest"]
Precision = Literal["float32", "bfloat16"]

# Exact vocabulary spellings only (4 digits for loc, 3 for seg): anything else is plain text. Bounded
# digit counts also keep int() cheap on adversarial input.
_TOKEN = re.compile(r"<(loc)([0-9]{4})>|<(seg)([0-9]{3})>")
_LEADING_TOKENS = re.compile(r"(?:<loc[0-9]{4}>|<seg[0-9]{3}>)*")
_CHUNK = re.compile(r"[^;]+")


class MaskCodec(Protocol):
    """What the tokenizer needs from a codec (`chexanatomy.vqvae.MaskVQVAE` is one)."""

    def encode_indices(self, masks: torch.Tensor) -> torch.Tensor:
        """[B, 64, 64] float in [0, 1] -> [B, 16] int64 in 0..127, row-major 4x4 grid."""
        ...

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """[B, 16] int64 in 0..127 -> [B, 64, 64] float, roughly [-1, 1]; the mask is > 0."""
        ...


@dataclass(eq=False)  # `==` on the mask array would be ambiguous; compare fields explicitly
class DecodedObject:
    """One object parsed from a model answer.

    Attributes:
        name: the text after the tokens, stripped (the whole chunk when it has no valid tokens).
        box_yxyx: (y0, x0, y1, x1) float pixels of the original image (module docstring), decoded as
            token / 1023 * size; (0, 0, 0, 0) when invalid.
        mask: [H, W] bool at the original image resolution; all False when invalid, and False
            outside the box always.
        valid: whether the object followed the contract (see `decode`, `decode_detections`).
    """

    name: str
    box_yxyx: tuple[float, float, float, float]
    mask: np.ndarray = field(repr=False)
    valid: bool


# --------------------------------------------------------------------------------------------------
# Strings
# --------------------------------------------------------------------------------------------------


def box_to_loc_values(box_yxyx_px: Sequence[float], image_hw: tuple[int, int]) -> np.ndarray:
    """`<loc>` values of a pixel box.

    Args:
        box_yxyx_px: (y0, x0, y1, x1) pixel edges (module docstring).
        image_hw: (H, W) of the image the box lives in, pixels.

    Returns:
        [4] int64 in 0..1023, order (y0, x0, y1, x1).
    """
    height, width = _check_image_size(image_hw)
    normalised = np.asarray(box_yxyx_px, dtype=np.float64) / np.array([height, width, height, width])
    return np.clip(np.round(normalised * LOC_MAX), 0, LOC_MAX).astype(np.int64)


def loc_values_to_box(locs: Sequence[int], image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """Inverse of `box_to_loc_values`: 4 values in 0..1023 -> (y0, x0, y1, x1) float pixels."""
    height, width = image_hw
    y0, x0, y1, x1 = (value / LOC_MAX for value in locs)
    return (y0 * height, x0 * width, y1 * height, x1 * width)


def encode_box(box_yxyx_px: Sequence[float], image_hw: tuple[int, int]) -> str:
    """Four `<loc%04d>` tokens of a pixel box, e.g. '<loc0051><loc0026><loc0563><loc0286>'."""
    return "".join(f"<loc{value:04d}>" for value in box_to_loc_values(box_yxyx_px, image_hw))


def encode_codes(indices: Sequence[int]) -> str:
    """Sixteen `<seg%03d>` tokens of codec indices ([16] ints in 0..127, row-major)."""
    values = [int(value) for value in np.asarray(indices).reshape(-1)]
    if len(values) != CODES_PER_MASK or not all(0 <= value < NUM_SEG for value in values):
        raise ValueError(f"need {CODES_PER_MASK} code indices in 0..{NUM_SEG - 1}, got {values}")
    return "".join(f"<seg{value:03d}>" for value in values)


def format_segment_target(
    box_yxyx_px: Sequence[float], image_hw: tuple[int, int], indices: Sequence[int], name: str
) -> str:
    """Answer for one object of a `segment` prompt: 4 `<loc>` + 16 `<seg>` + ' ' + name."""
    return f"{encode_box(box_yxyx_px, image_hw)}{encode_codes(indices)} {_check_name(name)}"


def format_detect_target(box_yxyx_px: Sequence[float], image_hw: tuple[int, int], name: str) -> str:
    """Answer for one object of a `detect` prompt: 4 `<loc>` + ' ' + name."""
    return f"{encode_box(box_yxyx_px, image_hw)} {_check_name(name)}"


def join_objects(targets: Sequence[str]) -> str:
    """Join per-object answers into one answer with ' ; '."""
    return OBJECT_SEPARATOR.join(targets)


def format_prompt(task: str, names: Sequence[str]) -> str:
    """Prompt in the paper's format: task 'segment' or 'detect', then the names joined with ' ; '.

    Example: `segment heart ; aorta`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not names:
        raise ValueError("names must not be empty")
    return f"{task} {join_objects([_check_name(name) for name in names])}"


def _check_name(name: str) -> str:
    """The stripped name; ValueError if it is empty or would break parsing (';' or a newline)."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped or ";" in stripped or "\n" in stripped:
        raise ValueError(f"structure name must be non-empty text without ';' or newlines, got {name!r}")
    return stripped


def _check_image_size(image_hw: Sequence[int]) -> tuple[int, int]:
    """(H, W) as ints; ValueError unless two positive integers."""
    try:
        height, width = (int(side) for side in image_hw)
    except (TypeError, ValueError):
        raise ValueError(f"image size must be (H, W), got {image_hw!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(image_hw):
        raise ValueError(f"image size must be two positive integers (H, W), got {image_hw!r}")
    return height, width


# --------------------------------------------------------------------------------------------------
# Encoding masks
# --------------------------------------------------------------------------------------------------


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight pixel boxes of masks (``chexanatomy.masks.tight_box`` of each).

    Args:
        masks: [N, H, W] bool.

    Returns:
        [N, 4] int64 (y0, x0, y1, x1), y1/x1 exclusive. ValueError naming the first empty mask.
    """
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for i, mask in enumerate(masks):
        box = tight_box(mask)
        if box is None:
            raise ValueError(f"mask {i} is empty: there is no box to encode (drop empty structures first)")
        boxes[i] = box
    return boxes


def pixel_boxes(boxes_yxyx_px: np.ndarray, image_hw: tuple[int, int], widen_px: int = 0) -> np.ndarray:
    """Round boxes to whole pixels, widen each side by `widen_px` and clip to the image.

    Args:
        boxes_yxyx_px: [N, 4] float pixel edges (y0, x0, y1, x1).
        image_hw: (H, W).
        widen_px: pixels added on every side (the paper's code used 10), >= 0.

    Returns:
        [N, 4] int64, 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W. ValueError naming an empty box.
    """
    height, width = _check_image_size(image_hw)
    boxes = np.round(np.asarray(boxes_yxyx_px, dtype=np.float64)).astype(np.int64)
    boxes = boxes + np.array([-widen_px, -widen_px, widen_px, widen_px])
    boxes = np.clip(boxes, 0, [height, width, height, width])
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"box {i} is empty inside the {height}x{width} image: {boxes_yxyx_px[i]}")
    return boxes


def crop_masks(masks: np.ndarray, boxes: np.ndarray, resize: ResizeMode = "bilinear") -> torch.Tensor:
    """Crop each mask to its box and resize the crop to the codec's 64x64 input.

    Args:
        masks: [N, H, W] bool.
        boxes: [N, 4] int64 pixel boxes (y0, x0, y1, x1), inside the image, non-empty.
        resize: "bilinear" (anti-aliased, soft values in [0, 1]; big_vision's reference) or
            "nearest" (pixel-centre sampling, values in {0, 1}).

    Returns:
        [N, 64, 64] float32 in [0, 1].
    """
    if resize not in ("bilinear", "nearest"):
        raise ValueError(f"resize must be 'bilinear' or 'nearest', got {resize!r}")
    crops = torch.zeros(len(masks), MASK_SIZE, MASK_SIZE)
    for i, (mask, (y0, x0, y1, x1)) in enumerate(zip(masks, boxes, strict=True)):
        crop = torch.from_numpy(mask[y0:y1, x0:x1].astype(np.float32))[None, None]
        if resize == "bilinear":
            resized = F.interpolate(crop, size=(MASK_SIZE, MASK_SIZE), mode="bilinear", antialias=True)
        else:  # "nearest-exact" samples pixel centres, like PIL's NEAREST, without a half-pixel shift
            resized = F.interpolate(crop, size=(MASK_SIZE, MASK_SIZE), mode="nearest-exact")
        crops[i] = resized[0, 0].clamp(0.0, 1.0)
    return crops


def encode_masks(
    masks: np.ndarray | torch.Tensor,
    names: Sequence[str],
    codec: MaskCodec,
    boxes: np.ndarray | torch.Tensor | None = None,
    resize: ResizeMode = "bilinear",
    widen_px: int = 0,
    precision: Precision = "float32",
) -> list[str]:
    """Segment-answer strings of the masks of one image, codec run once for all of them.

    Args:
        masks: [N, H, W] bool (or numbers, > 0 is inside), one mask per structure, numpy or torch.
        names: N structure names.
        codec: a `MaskCodec`, e.g. `MaskVQVAE`.
        boxes: optional [N, 4] (y0, x0, y1, x1) pixel edges; default the tight box of each mask.
        resize: crop resize mode, see `crop_masks`.
        widen_px: pixels added to every side of each box (clipped to the image); the widened box is
            the one written in the `<loc>` tokens.
        precision: "float32" (exact, reproducible codes: what corpus targets use) or "bfloat16"
            (`codec_precision`: faster, about 1 % of codes differ).

    Returns:
        N strings `<loc>x4<seg>x16 name`; join them with `join_objects`.
    """
    masks = _as_bool_masks(masks)
    if len(names) != len(masks):
        raise ValueError(f"got {len(masks)} masks but {len(names)} names")
    if widen_px < 0:
        raise ValueError(f"widen_px must be >= 0, got {widen_px}")
    names = [_check_name(name) for name in names]  # fail before the codec runs
    if len(masks) == 0:
        return []
    image_hw = masks.shape[1:]
    raw_boxes = tight_boxes(masks) if boxes is None else _as_box_array(boxes, len(masks))
    int_boxes = pixel_boxes(raw_boxes, image_hw, widen_px)
    crops = crop_masks(masks, int_boxes, resize)
    with torch.no_grad(), codec_precision(codec, precision):
        indices = codec.encode_indices(crops.to(_codec_device(codec))).cpu().numpy()
    return [
        format_segment_target(box, image_hw, codes, name)
        for box, codes, name in zip(int_boxes, indices, names, strict=True)
    ]


def _as_bool_masks(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """[N, H, W] numpy bool from a numpy array or torch tensor (> 0 is inside)."""
    array = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {array.shape}")
    return array if array.dtype == bool else array > 0


def _as_box_array(boxes: np.ndarray | torch.Tensor, count: int) -> np.ndarray:
    """[count, 4] float64 boxes from numpy or torch; ValueError on a wrong shape."""
    array = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if array.shape != (count, 4):
        raise ValueError(f"boxes must be [{count}, 4] (y0, x0, y1, x1) pixels, got shape {array.shape}")
    return array.astype(np.float64)


def codec_precision(codec: MaskCodec, precision: Precision) -> contextlib.AbstractContextManager:
    """The context the codec runs in: nothing for "float32", bfloat16 autocast on the codec's device otherwise.

    bfloat16 roughly doubles the network's CPU throughput where the CPU has bfloat16 instructions (AVX512-BF16,
    AMX; 1.3x end to end with cropping and pasting) and changes about 1 % of codes and 0.3 % of decoded pixels
    (bench/bench_codec.py: macro Dice 0.9534 against 0.9537).
    """
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(_codec_device(codec).type, dtype=torch.bfloat16)


def _codec_device(codec: MaskCodec) -> torch.device:
    """Device of the codec's parameters (CPU for parameter-less codecs)."""
    try:
        return next(codec.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# Decoding answers
# --------------------------------------------------------------------------------------------------


@dataclass
class _ParsedObject:
    """An answer chunk after parsing: box/codes are None when the chunk broke the contract."""

    name: str
    box_yxyx: tuple[float, float, float, float] | None
    codes: list[int] | None = None


def iter_objects(text: str | bytes) -> Iterator[str]:
    """Per-object chunks of an answer, one at a time: split on ';', stripped, empty chunks dropped.

    Bytes are decoded as UTF-8 with replacement characters, so raw model output never raises.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for match in _CHUNK.finditer(str(text)):
        if chunk := match.group(0).strip():
            yield chunk


def split_objects(text: str | bytes) -> list[str]:
    """All per-object chunks of an answer (see `iter_objects`)."""
    return list(iter_objects(text))


def capped_objects(text: str | bytes) -> tuple[list[str], int]:
    """The first `MAX_OBJECTS_PER_ANSWER` chunks of an answer, and how many chunks follow them (counted, not kept)."""
    chunks = iter_objects(text)
    first = list(islice(chunks, MAX_OBJECTS_PER_ANSWER))
    return first, sum(1 for _ in chunks)


def _overflow(count: int) -> list[_ParsedObject]:
    """The invalid object that stands for the ``count`` chunks beyond the cap (none when ``count`` is 0)."""
    return [_ParsedObject(f"{count} more objects (over {MAX_OBJECTS_PER_ANSWER})", None)] if count else []


def _parse_capped(text: str | bytes, parse, image_hw: tuple[int, int]) -> list[_ParsedObject]:
    """``parse`` applied to the capped chunks of ``text``, then the overflow object if any."""
    chunks, extra = capped_objects(text)
    return [parse(chunk, image_hw) for chunk in chunks] + _overflow(extra)


def _parse_tokens(chunk: str) -> tuple[list[tuple[str, int]], str]:
    """Leading `<loc>`/`<seg>` tokens of a chunk as (kind, value) pairs, and the text after them."""
    run = _LEADING_TOKENS.match(chunk).group(0)
    tokens = [(loc or seg, int(loc_value or seg_value)) for loc, loc_value, seg, seg_value in _TOKEN.findall(run)]
    return tokens, chunk[len(run) :].strip()


def answer_locs(text: str | bytes) -> list[int]:
    """The leading `<loc>` values of an answer's first object, in the order written (y0, x0, y1, x1, ...).

    Read whether or not the object is valid (an answer that breaks the contract still shows where its box went);
    ``[]`` when the first object starts with no `<loc>` token. Never raises on the text.
    """
    tokens, _ = _parse_tokens(next(iter_objects(text), ""))
    return [value for _, value in takewhile(lambda token: token[0] == "loc", tokens)]


def _valid_box(locs: list[int]) -> bool:
    """Box rule of the contract: values in 0..1023, y1 > y0 and x1 > x0."""
    return max(locs) <= LOC_MAX and locs[2] > locs[0] and locs[3] > locs[1]


def _parse_segment(chunk: str, image_hw: tuple[int, int]) -> _ParsedObject:
    """Parse one `segment` answer chunk: valid only as exactly 4 loc + 16 seg tokens, in range."""
    tokens, name = _parse_tokens(chunk)
    kinds = [kind for kind, _ in tokens]
    values = [value for _, value in tokens]
    if not tokens:  # nothing parsed: keep the raw chunk as the name so the caller can see it
        return _ParsedObject(chunk, None)
    if kinds != ["loc"] * 4 + ["seg"] * CODES_PER_MASK or not _valid_box(values[:4]) or max(values[4:]) >= NUM_SEG:
        return _ParsedObject(name, None)
    return _ParsedObject(name, loc_values_to_box(values[:4], image_hw), values[4:])


def _parse_detection(chunk: str, image_hw: tuple[int, int]) -> _ParsedObject:
    """Parse one `detect` answer chunk: valid only as exactly 4 loc tokens, in range."""
    tokens, name = _parse_tokens(chunk)
    if not tokens:
        return _ParsedObject(chunk, None)
    values = [value for _, value in tokens]
    if [kind for kind, _ in tokens] != ["loc"] * 4 or not _valid_box(values):
        return _ParsedObject(name, None)
    return _ParsedObject(name, loc_values_to_box(values, image_hw))


def box_pixel_edges(box_yxyx_px: Sequence[float], image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer rows/columns a decoded box covers: (r0, c0, r1, c1), r1/c1 exclusive, at least 1 px.

    Edges are rounded to the nearest pixel and clipped to the image, so a box that is valid in tokens
    never covers zero pixels.
    """
    height, width = image_hw
    y0, x0, y1, x1 = (int(round(value)) for value in box_yxyx_px)
    r0, c0 = min(max(y0, 0), height - 1), min(max(x0, 0), width - 1)
    return r0, c0, min(max(y1, r0 + 1), height), min(max(x1, c0 + 1), width)


def paste_mask(map64: torch.Tensor, box_yxyx_px: Sequence[float], image_hw: tuple[int, int]) -> np.ndarray:
    """Draw a codec output into its box at the original resolution.

    Args:
        map64: [64, 64] float, codec output, mask where > 0.
        box_yxyx_px: (y0, x0, y1, x1) float pixel edges.
        image_hw: (H, W) of the original image.

    Returns:
        [H, W] bool: the map resized (bilinear, anti-aliased when shrinking, as PIL's BILINEAR that
        big_vision uses) to the box's pixel size, thresholded at > 0; False outside the box.
    """
    r0, c0, r1, c1 = box_pixel_edges(box_yxyx_px, image_hw)
    size = (r1 - r0, c1 - c0)
    shrinking = min(size) < MASK_SIZE  # anti-aliasing only changes a shrink; plain bilinear is faster otherwise
    resized = F.interpolate(map64[None, None].float(), size=size, mode="bilinear", antialias=shrinking)
    mask = np.zeros(image_hw, dtype=bool)
    mask[r0:r1, c0:c1] = resized[0, 0].numpy() > 0
    return mask


def _decode_codes(codes: list[list[int]], codec: MaskCodec, precision: Precision = "float32") -> torch.Tensor:
    """Run the codec decoder once: M x [16] indices -> [M, 64, 64] float32 on CPU."""
    if not codes:
        return torch.zeros(0, MASK_SIZE, MASK_SIZE)
    indices = torch.tensor(codes, dtype=torch.long, device=_codec_device(codec))
    with torch.no_grad(), codec_precision(codec, precision):
        return codec.decode_indices(indices).detach().float().cpu()


def decode_batch(
    texts: Sequence[str], image_sizes: Sequence[tuple[int, int]], codec: MaskCodec, precision: Precision = "float32"
) -> list[list[DecodedObject]]:
    """Decode `segment` answers of several images, running the codec decoder once for all objects.

    Args:
        texts: B generated answers (the answer only, without the prompt; `<loc>`/`<seg>` kept).
        image_sizes: B original image sizes (H, W), pixels.
        codec: a `MaskCodec`.
        precision: "float32" or "bfloat16" (see `codec_precision`).

    Returns:
        Per text, one `DecodedObject` per non-empty ';'-separated chunk, in order, for the first
        `MAX_OBJECTS_PER_ANSWER` chunks; the chunks beyond them, if any, are one more invalid object
        (its name says how many). A chunk is valid only if it starts with exactly 4 `<loc>` then 16
        `<seg>` tokens, locs in 0..1023, segs in 0..127, y1 > y0 and x1 > x0; anything else gives
        valid=False and an empty mask. Never raises on the text; a prompted structure missing from
        the answer is for the caller to count as invalid.
    """
    if len(texts) != len(image_sizes):
        raise ValueError(f"got {len(texts)} texts but {len(image_sizes)} image sizes")
    sizes = [_check_image_size(size) for size in image_sizes]
    parsed = [_parse_capped(text, _parse_segment, size) for text, size in zip(texts, sizes, strict=True)]
    codes = [obj.codes for objs in parsed for obj in objs if obj.codes is not None]
    maps = iter(_decode_codes(codes, codec, precision))
    return [[_to_decoded(obj, size, maps) for obj in objs] for objs, size in zip(parsed, sizes, strict=True)]


def _to_decoded(obj: _ParsedObject, image_hw: tuple[int, int], maps: Iterator[torch.Tensor]) -> DecodedObject:
    """A `DecodedObject` from a parsed chunk, taking the next codec map when the chunk is valid."""
    if obj.box_yxyx is None:
        return DecodedObject(obj.name, (0.0, 0.0, 0.0, 0.0), np.zeros(image_hw, dtype=bool), False)
    return DecodedObject(obj.name, obj.box_yxyx, paste_mask(next(maps), obj.box_yxyx, image_hw), True)


def decode(
    text: str, image_size: tuple[int, int], codec: MaskCodec, precision: Precision = "float32"
) -> list[DecodedObject]:
    """Decode one `segment` answer; see `decode_batch` for the rules. Never raises on the text."""
    return decode_batch([text], [image_size], codec, precision)[0]


def decode_detections(text: str, image_size: tuple[int, int]) -> list[DecodedObject]:
    """Decode one `detect` answer (`<loc>`x4 + name per object, ' ; '-joined).

    Valid only with exactly 4 `<loc>` tokens (no `<seg>`), in 0..1023, y1 > y0 and x1 > x0. The mask
    of a valid object is its box filled (same pixel edges as `decode`), so box answers can be scored
    with the same mask metrics; invalid objects have an empty mask. At most `MAX_OBJECTS_PER_ANSWER`
    objects, then one invalid object for the rest (as `decode_batch`). Never raises on the text.
    """
    size = _check_image_size(image_size)
    objects = []
    for parsed in _parse_capped(text, _parse_detection, size):
        mask = np.zeros(size, dtype=bool)
        if parsed.box_yxyx is None:
            objects.append(DecodedObject(parsed.name, (0.0, 0.0, 0.0, 0.0), mask, False))
            continue
        r0, c0, r1, c1 = box_pixel_edges(parsed.box_yxyx, size)
        mask[r0:r1, c0:c1] = True
        objects.append(DecodedObject(parsed.name, parsed.box_yxyx, mask, True))
    return objects


# --------------------------------------------------------------------------------------------------
# The bundle a dataset or model uses
# --------------------------------------------------------------------------------------------------


@dataclass
class MaskTokenizer:
    """A codec plus the crop settings one dataset was encoded with.

    Attributes:
        codec: a `MaskCodec`, e.g. `MaskVQVAE`.
        resize: "bilinear" (default, big_vision) or "nearest" (the paper's code); see `crop_masks`.
        widen_px: pixels added to every box side before cropping (the paper's code: 10).
        precision: arithmetic of the codec, "float32" (default: exact, reproducible codes) or "bfloat16"
            (faster on CPUs with bfloat16 instructions; see `codec_precision`). Corpus
            targets are always encoded in float32.
    """

    codec: MaskCodec
    resize: ResizeMode = "bilinear"
    widen_px: int = 0
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        if self.resize not in ("bilinear", "nearest"):
            raise ValueError(f"resize must be 'bilinear' or 'nearest', got {self.resize!r}")
        if self.widen_px < 0:
            raise ValueError(f"widen_px must be >= 0, got {self.widen_px}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")

    def settings(self) -> dict[str, object]:
        """The encoding choices to state in a dataset card."""
        return {"mask_resize": self.resize, "box_widen_px": self.widen_px, "loc_scale": LOC_MAX}

    def encode(self, masks: np.ndarray | torch.Tensor, names: Sequence[str], boxes=None) -> list[str]:
        """Per-object segment answers; see `encode_masks`."""
        return encode_masks(masks, names, self.codec, boxes, self.resize, self.widen_px, self.precision)

    def decode(self, text: str, image_size: tuple[int, int]) -> list[DecodedObject]:
        """Decoded objects of one answer; see `decode_batch`."""
        return decode(text, image_size, self.codec, self.precision)

    def decode_batch(self, texts: Sequence[str], image_sizes: Sequence[tuple[int, int]]) -> list[list[DecodedObject]]:
        """Decoded objects of several answers, one codec call; see `decode_batch`."""
        return decode_batch(texts, image_sizes, self.codec, self.precision)
